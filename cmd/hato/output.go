package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// printer writes records: text lines for people, or one JSON object per
// line with --json.
type printer struct {
	w    io.Writer
	json bool
}

func (p *printer) register(fs *flag.FlagSet) {
	fs.BoolVar(&p.json, "json", false, "print one JSON object per line instead of text")
}

// record prints v as a JSON line, or text as it is.
func (p *printer) record(v any, text string) {
	if p.json {
		b, err := json.Marshal(v)
		if err != nil {
			b, _ = json.Marshal(map[string]string{"error": err.Error()})
		}
		fmt.Fprintf(p.w, "%s\n", b)
		return
	}
	fmt.Fprintln(p.w, safeLines(text))
}

// safe escapes what a terminal would act on in text that came from the
// broker or a message (ids, reasons, service names, routing keys,
// headers): control and format characters (ESC, CR, newline, bidi
// overrides, ...) and invalid UTF-8 become Go escapes (\x1b, \u202e), so
// a message cannot clear the screen or fake a line of output. --json
// output stays exact.
func safe(s string) string { return escape(s, false) }

// safeLines is safe for several lines: newline and tab stay.
func safeLines(s string) string { return escape(s, true) }

func escape(s string, lines bool) string {
	if !needsEscape(s, lines) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case lines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x100 && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func needsEscape(s string, lines bool) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			return true
		}
		if (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) && !(lines && (r == '\n' || r == '\t')) {
			return true
		}
		i += n
	}
	return false
}

// progress is a line on stderr rewritten in place during long operations,
// shown only when stderr is a terminal.
type progress struct {
	w     io.Writer
	on    bool
	shown bool
	last  time.Time
}

func newProgress(e *env) *progress {
	f, ok := e.stderr.(*os.File)
	return &progress{w: e.stderr, on: ok && isTerminal(f)}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// update rewrites the line, at most five times a second.
func (p *progress) update(format string, args ...any) {
	if !p.on || time.Since(p.last) < 200*time.Millisecond {
		return
	}
	p.last = time.Now()
	p.shown = true
	fmt.Fprintf(p.w, "\r\033[K"+format, args...)
}

// clear erases the line.
func (p *progress) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// showBody renders a body that no envelope decoded: as text when it is
// printable UTF-8, else as base64. It returns the rendering and "text" or
// "base64".
func showBody(b []byte) (string, string) {
	if printable(b) {
		return string(b), "text"
	}
	return base64.StdEncoding.EncodeToString(b), "base64"
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !strings.ContainsRune("\n\r\t", r) {
			return false
		}
	}
	return true
}

// clip shortens s to n runes for a text column, marking the cut.
func clip(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// formatTime writes t for people and JSON: RFC 3339 in UTC with
// milliseconds; the zero time is "".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

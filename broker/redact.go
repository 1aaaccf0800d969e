package broker

import (
	"errors"
	"net/url"
	"strings"
)

// redactedPassword replaces every password Redact finds.
const redactedPassword = "xxxxx"

// Redact returns s with every password of a user:password@ it contains
// replaced, for logs and errors. s need not be one URL, nor parse at all:
// for every '@' in s, two spans are masked, from the first ':' after a
// start up to that '@': the start after the last "://" before the '@',
// and the start after the first "://" since the previous '@' (either
// falls back to the start of s, or of the text after the previous '@',
// when there is none). So "amqp://u:p@h1,amqp://u:q@h2" keeps neither p
// nor q, a password with unescaped '/', '@', ':' or spaces is masked whole,
// and so is one starting with "//" ("amqp://u://p@h", whose "://" the
// first rule alone mistook for the scheme's). It may mask more than a
// password (a host:port followed by an '@' further on), never less, unless
// the password itself holds "://".
func Redact(s string) string {
	if strings.IndexByte(s, '@') < 0 {
		return s
	}
	masked := make([]bool, len(s))
	hit := false
	prev := 0
	for j := 0; j < len(s); j++ {
		if s[j] != '@' {
			continue
		}
		start := 0
		if k := strings.LastIndex(s[:j], "://"); k >= 0 {
			start = k + 3
		}
		first := prev
		if k := strings.Index(s[prev:j], "://"); k >= 0 {
			first = prev + k + 3
		}
		hit = maskFrom(s, masked, start, j) || hit
		hit = maskFrom(s, masked, first, j) || hit
		prev = j + 1
	}
	if !hit {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !masked[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && masked[i] {
			i++
		}
		b.WriteString(redactedPassword)
	}
	return b.String()
}

// maskFrom marks s from after the first ':' in s[start:end] up to end, and
// reports whether there was one.
func maskFrom(s string, masked []bool, start, end int) bool {
	colon := strings.IndexByte(s[start:end], ':')
	if colon < 0 {
		return false
	}
	for i := start + colon + 1; i < end; i++ {
		masked[i] = true
	}
	return true
}

// scrubURLError keeps the reason of a URL parse error without the URL or
// any part of it: the reasons of net/url quote the piece they stumbled on
// (`invalid port ":secret" after host` for a password holding a '/'), so
// quoted text is dropped too.
func scrubURLError(err error) string {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
	} else if strings.Contains(msg, "://") {
		return "malformed URL"
	}
	return Redact(dropQuoted(msg))
}

// dropQuoted replaces the contents of every double-quoted part of s by "…";
// an unterminated quote runs to the end.
func dropQuoted(s string) string {
	if strings.IndexByte(s, '"') < 0 {
		return s
	}
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && !in:
			b.WriteString(`"…`)
			in = true
		case c == '"' && in:
			b.WriteByte('"')
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	if in {
		b.WriteByte('"')
	}
	return b.String()
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// usageError is a mistake on the command line (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// spec describes a subcommand for its --help.
type spec struct {
	name     string // "dlq replay"
	args     string // "QUEUE"
	about    string // what it does, a paragraph
	examples string // lines of commands, indented by two spaces
}

// flagSet returns the FlagSet of a subcommand. Parse errors and help are
// printed by parse, not by the flag package.
func newFlagSet(s spec) *flag.FlagSet {
	fs := flag.NewFlagSet("hato "+s.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// printHelp writes a subcommand's help: usage, description, examples,
// flags (none when fs is nil: a command of subcommands).
func printHelp(w io.Writer, s spec, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: hato %s%s %s\n\n%s\n\nExamples:\n%s", s.name, flagsWord(fs), s.args, s.about, s.examples)
	if fs == nil {
		return
	}
	fmt.Fprint(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parse parses args with fs, allowing flags after positional arguments
// ("hato publish KEY DATA --count 5"); "--" ends the flags. It returns the
// positional arguments. -h/--help prints the help on stdout and returns
// flag.ErrHelp; a bad flag is a usage error.
func parse(e *env, s spec, fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(e.stdout, s, fs)
				return nil, err
			}
			return nil, usagef("%s: %v (run hato %s --help)", s.name, err, s.name)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// parseArgs registers a subcommand's flags, parses args (see parse) and
// checks that between min and max (-1: any) positional arguments remain.
func parseArgs(e *env, s spec, register func(*flag.FlagSet), args []string, min, max int) ([]string, error) {
	fs := newFlagSet(s)
	register(fs)
	pos, err := parse(e, s, fs, args)
	if err != nil {
		return nil, err
	}
	if err := wantArgs(s, pos, min, max); err != nil {
		return nil, err
	}
	return pos, nil
}

// wantArgs checks the number of positional arguments.
func wantArgs(s spec, pos []string, min, max int) error {
	if len(pos) < min || (max >= 0 && len(pos) > max) {
		return usagef("%s: want arguments %s, got %d (run hato %s --help)", s.name, s.args, len(pos), s.name)
	}
	return nil
}

// plural is "1 message", "2 messages", "0 messages".
func plural[N int | int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// defaultURL is used when neither --url nor AMQP_URL is set.
const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// connFlags are the flags of every command that talks to the broker.
type connFlags struct {
	urls    stringList
	timeout time.Duration
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.Var(&c.urls, "url", "AMQP URL; repeat (or separate with commas or spaces) for fallbacks tried in order (default $AMQP_URL, else "+defaultURL+")")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "bound on connecting and on each broker operation (a confirm, a get)")
}

// resolve returns the URLs to try, in order: --url, else AMQP_URL, else
// the default. Every one must parse.
func (c *connFlags) resolve(getenv func(string) string) ([]string, error) {
	var urls []string
	for _, u := range c.urls {
		urls = append(urls, splitURLs(u)...)
	}
	if len(urls) == 0 {
		urls = splitURLs(getenv("AMQP_URL"))
	}
	if len(urls) == 0 {
		urls = []string{defaultURL}
	}
	for _, u := range urls {
		if _, err := amqp.ParseURI(u); err != nil {
			return nil, usagef("invalid AMQP URL %s", maskBadURL(u))
		}
	}
	if c.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	return urls, nil
}

// splitURLs splits a list of URLs separated by commas or white space, as
// the library splits AMQP_URL: only where the next part starts with
// amqp:// or amqps://, so a comma or space inside a password or vhost
// never splits its URL.
func splitURLs(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if !urlSeparator(s[i]) {
			continue
		}
		rest := strings.TrimLeftFunc(s[i+1:], func(r rune) bool { return r < utf8.RuneSelf && urlSeparator(byte(r)) })
		if rest == "" || strings.HasPrefix(rest, "amqp://") || strings.HasPrefix(rest, "amqps://") {
			if part := strings.Trim(s[start:i], ", \t\n"); part != "" {
				out = append(out, part)
			}
			start = i + 1
		}
	}
	if part := strings.Trim(s[start:], ", \t\n"); part != "" {
		out = append(out, part)
	}
	return out
}

func urlSeparator(c byte) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' }

// maskBadURL shows a URL that does not parse without anything that may be
// a credential: everything between "://" (or the start) and the last '@'
// is masked, and without an '@' all but the scheme is, since the parse
// error may come from a password that holds a '/' or '#'.
func maskBadURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		scheme, rest = "", u
	} else {
		scheme += "://"
	}
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		return scheme + "xxxxx" + rest[at:]
	}
	if scheme == "" {
		return "(xxxxx)"
	}
	return scheme + "xxxxx"
}

// headerFlags is a repeatable k=v flag.
type headerFlags amqp.Table

func (h headerFlags) String() string { return "" }

func (h headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want k=v, got %q", v)
	}
	h[k] = val
	return nil
}

func flagsWord(fs *flag.FlagSet) string {
	if fs == nil {
		return ""
	}
	return " [flags]"
}

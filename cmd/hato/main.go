// Command hato is the operator's tool for hato and tomodachi services on
// RabbitMQ: publish messages in their envelopes, tail a routing key, inspect
// and replay dead-letter queues, and print the queue names a service uses.
//
//	go install github.com/hato-go/hato/cmd/hato@latest
//	hato --help
//
// Subcommands:
//
//	hato publish KEY [DATA|-]   publish in the JSON, protobuf or raw envelope; waits for the confirm
//	hato tail PATTERN           decode and print what is published on PATTERN (a temporary queue)
//	hato names KEY              the queue, wire key and dead-letter queue a route on KEY uses
//	hato dlq list|show|replay|purge
//	                            dead-letter queues: counts and reasons, read unacked,
//	                            republish (acked only once the copy is confirmed), purge
//
// dlq replay and dlq purge ask on the terminal first, replay after
// printing how many messages would go to each exchange and routing key;
// --yes (-y) does not ask. Without a terminal on stdin, replay refuses
// unless --yes or --dry-run.
//
// It connects to --url, else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/
// (several URLs are tried in order). Every subcommand has --help with
// examples. Output is text for people, or one JSON object per line with
// --json. Exit codes: 0 success, 1 failure (broker unreachable, a publish
// nacked or unroutable, a queue missing, interrupted, a purge or replay
// not confirmed), 2 usage error.
//
// The manual, with every flag and what replay guarantees, is docs/cli.md in
// the repository (https://github.com/hato-go/hato/blob/main/docs/cli.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hato-go/hato/broker"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command sees of the process: its context (cancelled by
// SIGINT/SIGTERM), standard streams, environment, and whether stdin is a
// terminal (nil: it is not), which decides whether a command may ask.
type env struct {
	ctx      context.Context
	stdin    io.Reader
	stdout   io.Writer
	stderr   io.Writer
	getenv   func(string) string
	terminal func() bool
}

// stdinTerminal reports whether someone can answer a question on stdin.
func (e *env) stdinTerminal() bool { return e.terminal != nil && e.terminal() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	e := &env{ctx: ctx, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv,
		terminal: func() bool { return isTerminal(os.Stdin) }}
	code := run(e, os.Args[1:])
	stop()
	os.Exit(code)
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"publish", "publish messages in an envelope and wait for the broker's confirms", runPublish},
		{"tail", "print the messages published on a routing-key pattern", runTail},
		{"dlq", "list, show, replay or purge dead-letter queues", runDLQ},
		{"names", "print the queue names and routing key a tomodachi/hato route uses", runNames},
		{"status", "print a route queue's messages and consumers (none: paused, stopped or down) and its delay queues", runStatus},
	}
}

// run runs the command line args (without the program name) and returns
// the exit code.
func run(e *env, args []string) int {
	if len(args) == 0 {
		topUsage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		topUsage(e.stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return exitCode(e, c.run(e, args[1:]))
		}
	}
	fmt.Fprintf(e.stderr, "hato: unknown command %q (run hato --help)\n", args[0])
	return exitUsage
}

// exitCode reports err on stderr and maps it to an exit code.
func exitCode(e *env, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(e.stderr, "hato: %s\n", safeLines(broker.Redact(err.Error())))
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `hato: publish, tail and repair the messages of hato and tomodachi services on RabbitMQ.

Usage: hato COMMAND [flags] [args]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run "hato COMMAND --help" for a command's flags and examples.

Broker: --url, else $AMQP_URL, else amqp://guest:guest@127.0.0.1:5672/.
Several URLs (repeated --url, or separated by commas or spaces before each
amqp:// or amqps://, so a password may hold a comma) are tried in order until
one connects.

Output: text, or one JSON object per line with --json. Progress lines go to
stderr, only when it is a terminal.

Exit codes:
  0  success
  1  failure: broker unreachable, publish nacked or unroutable, queue missing,
     interrupted, purge or replay not confirmed
  2  usage error: unknown command or flag, wrong arguments, dlq replay
     without --yes when stdin is not a terminal

Example:
  hato publish example.topic '{"hello": "world"}'
`)
}

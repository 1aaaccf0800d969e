package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/hato-go/hato/broker"
)

// singularPlural finds "1 messages"-style wording: the number one before a
// plural noun ("1 of 1 queues", "after 1 attempts").
var singularPlural = regexp.MustCompile(`(^|[^0-9.,])1 (message|queue|consumer|attempt|time|route|header|service|key|copy|copie|second|minute)s\b`)

// The new-user pass of issue 19: every command's --help, as a new user
// reads it, has its usage, an example, and a Flags section with every flag
// explained (no empty section, no flag without a usage line), and no
// "1 messages" wording.
func TestHelpOfEveryCommandReadsWell(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"publish", "--help"}, {"tail", "--help"}, {"names", "--help"}, {"status", "--help"},
		{"dlq", "--help"}, {"dlq", "list", "--help"}, {"dlq", "show", "--help"},
		{"dlq", "replay", "--help"}, {"dlq", "purge", "--help"},
	} {
		r := runIn("", nil, args...)
		name := strings.Join(args, " ")
		if r.code != exitOK || !strings.HasPrefix(r.stdout, "Usage: hato") && !strings.HasPrefix(r.stdout, "hato: ") {
			t.Errorf("hato %s: %v", name, r)
			continue
		}
		if !strings.Contains(r.stdout, "Example") {
			t.Errorf("hato %s has no example:\n%s", name, r.stdout)
		}
		if m := singularPlural.FindString(r.stdout); m != "" {
			t.Errorf("hato %s says %q", name, m)
		}
		checkFlagsSection(t, name, r.stdout)
	}
}

// checkFlagsSection fails when help has a Flags section without flags, or
// a flag without its usage line.
func checkFlagsSection(t *testing.T, name, help string) {
	t.Helper()
	_, flags, ok := strings.Cut(help, "\nFlags:\n")
	if !ok {
		return
	}
	lines := strings.Split(strings.TrimRight(flags, "\n"), "\n")
	if len(lines) < 2 {
		t.Errorf("hato %s: empty Flags section:\n%s", name, help)
		return
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, "  -") {
			continue
		}
		if _, usage, inline := strings.Cut(l, "\t"); inline && strings.TrimSpace(usage) != "" {
			continue // package flag prints a one-letter bool flag's usage on its line
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) == "" || strings.HasPrefix(lines[i+1], "  -") {
			t.Errorf("hato %s: flag %s has no usage line", name, strings.TrimSpace(l))
		}
	}
}

// Counts in text output are singular for one.
func TestCountsAreSingularForOne(t *testing.T) {
	st := queueStatus{Queue: "q", Messages: 1, Consumers: 1,
		Delayed: []delayCount{{Queue: "q.retry.5s", Messages: 1}}}
	for _, s := range []string{
		st.text(),
		(dlqInfo{Queue: "q.dlq", Messages: 1}).text(),
		(replaySummary{Queue: "q", Replayed: 1, Left: 1}).text(),
		fmt.Sprintf("%d of %s not confirmed", 1, plural(1, "message")),
	} {
		if m := singularPlural.FindString(s); m != "" {
			t.Errorf("%q says %q", s, m)
		}
	}
	if s := st.text(); s != "q  1 message, 1 consumer\n  q.retry.5s  1 message waiting for a delayed retry" {
		t.Errorf("status text %q", s)
	}
}

// status does not call a dead-letter queue, which nothing consumes by
// design, "paused, stopped or down"; a route's queue without a consumer it
// does. A delay queue that could not be read fails the queue.
func TestStatusOfDeadLetterAndDelayQueues(t *testing.T) {
	if s := (queueStatus{Queue: "q.dlq", Messages: 3, Idle: true}).text(); strings.Contains(s, "no consumer") {
		t.Errorf("a DLQ is called idle: %q", s)
	}
	if s := (queueStatus{Queue: "q", Messages: 3, Idle: true}).text(); !strings.Contains(s, "no consumer") {
		t.Errorf("a route queue without consumer is not called idle: %q", s)
	}
	missing := queueStatus{Queue: "q", Delayed: []delayCount{{Queue: "q.retry.1m0s", Error: "404"}}}
	if missing.ok() || !(queueStatus{Queue: "q"}).ok() {
		t.Errorf("ok() of a queue with a missing delay queue %v", missing.ok())
	}
}

// Only publish has --allow-unroutable: dlq replay's unroutable error must
// not name it. The default exchange has a name in text output.
func TestUnroutableHintAndDefaultExchange(t *testing.T) {
	err := fmt.Errorf("x: %w", broker.ErrUnroutable)
	if s := unroutable(err).Error(); strings.Contains(s, "--allow-unroutable") || !strings.Contains(s, "no queue is bound") {
		t.Errorf("replay's unroutable: %q", s)
	}
	if s := publishUnroutable(err).Error(); !strings.Contains(s, "--allow-unroutable") {
		t.Errorf("publish's unroutable: %q", s)
	}
	other := errors.New("nack")
	if unroutable(other) != other || publishUnroutable(other) != other {
		t.Error("other errors are changed")
	}
	if s := (publishResult{RoutingKey: "q", Published: 1, Confirmed: 1, MessageUUID: "u"}).text(); !strings.Contains(s, "on the default exchange") {
		t.Errorf("publish to the default exchange: %q", s)
	}
}

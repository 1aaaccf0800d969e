//go:build integration

package main

import (
	"strings"
	"testing"

	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 19: replay shows its plan and asks on a terminal; "n" leaves the
// DLQ as it was and publishes nothing, "y" replays what the plan named.
// Without a terminal it refuses unless --yes.
func TestReplayAsksBeforeItPublishes(t *testing.T) {
	url := pkgVhost.URL(t)
	q := testutil.Key(t, "ask") + ".dlq"
	target := testutil.Key(t, "ask-target")
	conn := brokertest.Dial(t, url, "cli-replay-ask")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{q, target} {
		if _, err := ch.QueueDeclare(name, false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if r := hatoRun(t, url, "", "publish", "--exchange", "", "--envelope", "raw", q, "x"); r.code != exitOK {
			t.Fatalf("publish: %v", r)
		}
	}
	counts := func() (int, int) {
		inDLQ, _ := brokertest.Inspect(t, conn, q)
		inTarget, _ := brokertest.Inspect(t, conn, target)
		return inDLQ, inTarget
	}
	vars := map[string]string{"AMQP_URL": url}
	args := []string{"dlq", "replay", "--exchange", "", "--to", target, q}

	if r := hatoRun(t, url, "y\n", args...); r.code != exitUsage || !strings.Contains(r.stderr, "--yes") {
		t.Errorf("replay, stdin a pipe: %v, want exit 2 naming --yes", r)
	}
	question := `Replay 2 messages to exchange "" key "` + target + `"? [y/N] `
	for _, answer := range []string{"n\n", "\n", ""} {
		r := runInTerminal(answer, vars, args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "2 messages to replay, 0 skipped") ||
			!strings.Contains(r.stderr, question) || !strings.Contains(r.stderr, "not confirmed") || r.stdout != "" {
			t.Errorf("replay answered %q: %v", answer, r)
		}
		if inDLQ, inTarget := counts(); inDLQ != 2 || inTarget != 0 {
			t.Fatalf("after replay answered %q: DLQ %d, target %d; want 2, 0", answer, inDLQ, inTarget)
		}
	}
	r := runInTerminal("y\n", vars, args...)
	if r.code != exitOK || !strings.Contains(r.stderr, question) || !strings.Contains(r.stdout, "replayed 2 messages from "+q+" to ") || !strings.Contains(r.stdout, "(2); 0 left in the queue") {
		t.Errorf("replay answered y: %v", r)
	}
	if inDLQ, inTarget := counts(); inDLQ != 0 || inTarget != 2 {
		t.Errorf("after replay answered y: DLQ %d, target %d; want 0, 2", inDLQ, inTarget)
	}
}

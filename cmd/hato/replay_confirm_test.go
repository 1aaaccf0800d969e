package main

import (
	"context"
	"strings"
	"testing"
)

// Issue 19: dlq replay published without asking. It asks on a terminal,
// and only y or yes goes on.
func TestConfirmTakesOnlyYesForAnAnswer(t *testing.T) {
	for answer, want := range map[string]bool{
		"y\n": true, "yes\n": true, "Y\n": true, " YES \n": true, "y": true,
		"n\n": false, "no\n": false, "\n": false, "": false, "yess\n": false, "sure\n": false,
	} {
		var stderr strings.Builder
		e := &env{ctx: context.Background(), stdin: strings.NewReader(answer), stderr: &stderr}
		if got := confirm(e, "Replay? [y/N] "); got != want {
			t.Errorf("answer %q: confirmed %v, want %v", answer, got, want)
		}
		if !strings.HasPrefix(stderr.String(), "Replay? [y/N] ") {
			t.Errorf("answer %q: question %q", answer, stderr.String())
		}
	}
}

// An interrupt while the question waits is no, not a hang.
func TestConfirmInterruptedIsNo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stderr strings.Builder
	blocked := blockingReader{}
	if confirm(&env{ctx: ctx, stdin: blocked, stderr: &stderr}, "Replay? ") {
		t.Error("an interrupted question confirmed")
	}
}

// blockingReader never returns.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) { select {} }

// Without a terminal and without --yes, replay refuses before it
// connects: a usage error that names --yes. --yes and --dry-run go on
// (to an unreachable broker here: exit 1).
func TestReplayWithoutTerminalNeedsYes(t *testing.T) {
	vars := map[string]string{"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}
	r := runIn("y\n", vars, "dlq", "replay", "q.dlq")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--yes") {
		t.Errorf("replay, stdin not a terminal: %v, want exit 2 naming --yes", r)
	}
	for _, args := range [][]string{
		{"dlq", "replay", "--yes", "q.dlq"}, {"dlq", "replay", "-y", "q.dlq"}, {"dlq", "replay", "--dry-run", "q.dlq"},
	} {
		if r := runIn("", vars, args...); r.code != exitFailure {
			t.Errorf("%q, stdin not a terminal: %v, want exit 1 (broker unreachable)", args, r)
		}
	}
	if r := runInTerminal("", vars, "dlq", "replay", "q.dlq"); r.code != exitFailure {
		t.Errorf("replay on a terminal: %v, want exit 1 (broker unreachable)", r)
	}
}

// The plan counts per target; the question names the targets, escaped,
// at most three of them.
func TestReplayPlanAndQuestion(t *testing.T) {
	var plan replaySummary
	plan.Queue = "q.dlq"
	for _, k := range []string{"a", "a", "b\x1b[2J", "c", "d"} {
		plan.addTarget("amq.topic", k)
		plan.Matched++
	}
	plan.Matched++
	plan.Skipped++
	text := plan.planText()
	for _, want := range []string{"5 messages to replay, 1 skipped", `    2 to exchange "amq.topic" key "a"`, `    1 to exchange "amq.topic" key "d"`} {
		if !strings.Contains(text, want) {
			t.Errorf("plan %q does not say %q", text, want)
		}
	}
	q := plan.question()
	want := `Replay 5 messages to exchange "amq.topic" key "a", exchange "amq.topic" key "b\x1b[2J", exchange "amq.topic" key "c", 1 more (listed above)? [y/N] `
	if q != want {
		t.Errorf("question\n%q, want\n%q", q, want)
	}
	for _, s := range []string{safeLines(text), safeLines(q)} {
		if strings.Contains(s, "\x1b") {
			t.Errorf("%q holds ESC", s)
		}
	}
}

// With a confirmed plan, a run replays no more to a target than the plan
// counted, and to no other target.
func TestReplayStaysInThePlan(t *testing.T) {
	var plan replaySummary
	plan.addTarget("amq.topic", "a")
	r := &replayer{plan: &plan}
	if !r.inPlan("amq.topic", "a") || r.inPlan("amq.topic", "b") || r.inPlan("", "a") {
		t.Fatal("inPlan before the run")
	}
	r.sum.addTarget("amq.topic", "a")
	if r.inPlan("amq.topic", "a") {
		t.Error("a second message to a target the plan counted once is in the plan")
	}
	if !(&replayer{}).inPlan("x", "y") {
		t.Error("without a plan every target is in it")
	}
}

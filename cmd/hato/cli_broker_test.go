//go:build integration

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// binary builds a main package of this module once per test process.
func binary(t *testing.T, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := built[pkg]; ok {
		return bin
	}
	bin := filepath.Join(binDir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	built[pkg] = bin
	return bin
}

// hatoCmd is the built hato command with AMQP_URL set to url.
func hatoCmd(t *testing.T, url, stdin string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary(t, "./cmd/hato"), args...)
	cmd.Env = append(os.Environ(), "AMQP_URL="+url)
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// hatoRun runs the built hato command to the end.
func hatoRun(t *testing.T, url, stdin string, args ...string) result {
	t.Helper()
	cmd := hatoCmd(t, url, stdin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run hato %q: %v", args, err)
	}
	return r
}

// proc is a command running in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testutil.LockedBuffer
	done           chan struct{}
	err            error
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stdout: &testutil.LockedBuffer{}, stderr: &testutil.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s\n%s", filepath.Base(cmd.Path), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.cmd.Path, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// startTail starts hato tail and waits until its queue is bound.
func startTail(t *testing.T, url string, args ...string) *proc {
	t.Helper()
	p := startProc(t, hatoCmd(t, url, "", append([]string{"tail"}, args...)...))
	brokertest.WaitFor(t, 30*time.Second, func() bool { return strings.Contains(p.stderr.String(), "tailing ") },
		"hato tail bound its queue")
	return p
}

// jsonLines decodes each line of out into a new T.
func jsonLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var rows []T
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		rows = append(rows, v)
	}
	return rows
}

// publish -> the example node -> tail: the forwarded message, decoded.
func TestPublishThroughTheExampleNodeToTail(t *testing.T) {
	url := pkgVhost.URL(t)
	nodeCmd := exec.Command(binary(t, "./examples/amqp-example"))
	nodeCmd.Env = append(os.Environ(), "AMQP_URL="+url)
	node := startProc(t, nodeCmd)
	tail := startTail(t, url, "--json", "--count", "1", "example.response")
	// The publish is mandatory: it fails (exit 1) until the node has bound
	// example.topic.
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		return hatoRun(t, url, "", "publish", "example.topic", `{"n": 42}`).code == exitOK
	}, "hato publish routed to the example node")
	if code := tail.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("tail exit code %d", code)
	}
	rows := jsonLines[tailRecord](t, tail.stdout.String())
	if len(rows) != 1 {
		t.Fatalf("tail printed %d records, want 1", len(rows))
	}
	r := rows[0]
	if r.RoutingKey != "example.response" || r.Exchange != "amq.topic" || r.Envelope != envJSON || r.Service != "amqp-example" ||
		r.MessageUUID == "" || r.Timestamp == "" || r.Topic != "example.response" || string(r.Data) != `{"n":42}` || r.Error != "" {
		t.Errorf("tail record %+v (data %s)", r, r.Data)
	}

	_ = node.cmd.Process.Signal(syscall.SIGTERM)
	if code := node.wait(t, 30*time.Second); code != hato.ExitOK {
		t.Errorf("example node exit code %d after SIGTERM", code)
	}
}

// Ctrl-C stops tail with exit 0 and its queue is gone.
func TestTailInterruptedLeavesNoQueue(t *testing.T) {
	url := pkgVhost.URL(t)
	tail := startTail(t, url, testutil.Key(t, "#"))
	_ = tail.cmd.Process.Signal(os.Interrupt)
	if code := tail.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("tail exit code %d after SIGINT", code)
	}
	queues, err := brokertest.ListQueues(pkgVhost.Name(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if strings.HasPrefix(q.Name, "amq.gen-") {
			t.Errorf("queue %s left behind", q.Name)
		}
	}
}

// A poison message goes to the DLQ; list shows it with its reason; show
// leaves it; a dry run changes nothing; after the handler is fixed,
// replay delivers it once and empties the DLQ.
func TestPoisonDeadLetterListShowReplay(t *testing.T) {
	url := pkgVhost.URL(t)
	key := testutil.Key(t, "poison")
	var failing atomic.Bool
	failing.Store(true)
	var handled, replayCount atomic.Int64
	svc, err := hato.New("cli-poison", append(testutil.Options(t, url),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 1}))...)
	if err != nil {
		t.Fatal(err)
	}
	err = hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[map[string]any]) error {
		if failing.Load() {
			return errors.New("poison: the handler refuses id 1")
		}
		n, _ := m.Properties.Headers[hdrReplayCount].(int64)
		replayCount.Store(n)
		handled.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	route := svc.Routes()[0]
	dlq := route.DeadLetterQueue
	conn := brokertest.Dial(t, url, "cli-poison-inspect")
	count := func() int { m, _ := brokertest.Inspect(t, conn, dlq); return m }

	if r := hatoRun(t, url, "", "publish", key, `{"id": 1}`); r.code != exitOK {
		t.Fatalf("publish: %v", r)
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return count() == 1 }, "the poison message in %s", dlq)

	checkList(t, url, dlq, route.Queue)
	checkShow(t, url, dlq, key)
	if n := count(); n != 1 {
		t.Fatalf("after show the DLQ holds %d messages, want 1", n)
	}
	r := hatoRun(t, url, "", "dlq", "replay", "--dry-run", "--json", dlq)
	if r.code != exitOK || !strings.Contains(r.stdout, `"action":"would-replay"`) || count() != 1 || handled.Load() != 0 {
		t.Fatalf("dry run: %v (DLQ %d, handled %d)", r, count(), handled.Load())
	}

	failing.Store(false)
	r = hatoRun(t, url, "", "dlq", "replay", "--yes", "--json", dlq)
	sums := jsonLines[replaySummary](t, r.stdout)
	if r.code != exitOK || len(sums) != 2 || sums[1].Replayed != 1 || sums[1].Left != 0 {
		t.Fatalf("replay: %v", r)
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return handled.Load() >= 1 }, "the replayed message handled")
	testutil.Stop(t, svc) // drains: anything still in flight is handled or back in the queue
	if handled.Load() != 1 || replayCount.Load() != 1 || count() != 0 {
		t.Errorf("handled %d times (x-hato-replay-count %d), DLQ holds %d; want once, 1, 0", handled.Load(), replayCount.Load(), count())
	}
	if m, _ := brokertest.Inspect(t, conn, route.Queue); m != 0 {
		t.Errorf("the route's queue holds %d messages", m)
	}
}

// checkList runs dlq list without arguments (rabbitmqctl finds the DLQ
// among the vhost's) and with the queue named.
func checkList(t *testing.T, url, dlq, origin string) {
	t.Helper()
	for _, args := range [][]string{{"dlq", "list", "--json"}, {"dlq", "list", "--json", dlq}} {
		r := hatoRun(t, url, "", args...)
		var d dlqInfo
		for _, row := range jsonLines[dlqInfo](t, r.stdout) {
			if row.Queue == dlq {
				d = row
			}
		}
		if r.code != exitOK || d.Queue == "" {
			t.Fatalf("%q: %v", args, r)
		}
		if d.Queue != dlq || d.Messages != 1 || len(d.Reasons) != 1 || d.Reasons[0].Count != 1 ||
			!strings.Contains(d.Reasons[0].Reason, "the handler refuses id 1") || len(d.OriginalQueues) != 1 || d.OriginalQueues[0] != origin {
			t.Errorf("%q: %+v", args, d)
		}
	}
	r := hatoRun(t, url, "", "dlq", "list", dlq)
	if !strings.Contains(r.stdout, dlq+"  1 message  service cli-poison, key ") || !strings.Contains(r.stdout, "  1× ") {
		t.Errorf("dlq list text: %v", r)
	}
}

// checkShow runs dlq show and checks the headers and data it prints.
func checkShow(t *testing.T, url, dlq, key string) {
	t.Helper()
	r := hatoRun(t, url, "", "dlq", "show", "--json", dlq)
	rows := jsonLines[shownMessage](t, r.stdout)
	if r.code != exitOK || len(rows) != 1 {
		t.Fatalf("dlq show: %v", r)
	}
	m := rows[0]
	if m.OriginalRoutingKey != key || m.OriginalExchange != "amq.topic" || m.Attempts != 1 || m.Service != "cli-poison" ||
		!strings.Contains(m.Reason, "refuses") || m.Headers[hdrDeadLetteredAt] == nil || string(m.Data.Data) != `{"id":1}` {
		t.Errorf("dlq show: %+v (data %s)", m, m.Data.Data)
	}
	if r := hatoRun(t, url, "", "dlq", "show", dlq); !strings.Contains(r.stdout, "the handler refuses id 1\n") ||
		!strings.Contains(r.stdout, `data:     {"id":1} (json envelope from hato-cli`) {
		t.Errorf("dlq show text: %v", r)
	}
}

// purge asks first and purges only when told yes.
func TestPurgeAsksFirst(t *testing.T) {
	url := pkgVhost.URL(t)
	q := testutil.Key(t, "purge") + ".dlq"
	conn := brokertest.Dial(t, url, "cli-purge")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if r := hatoRun(t, url, "", "publish", "--exchange", "", "--envelope", "raw", q, "x"); r.code != exitOK {
			t.Fatalf("publish: %v", r)
		}
	}
	if r := hatoRun(t, url, "no\n", "dlq", "purge", q); r.code != exitFailure || !strings.Contains(r.stderr, "purge 2 messages") {
		t.Errorf("purge answered no: %v", r)
	}
	if m, _ := brokertest.Inspect(t, conn, q); m != 2 {
		t.Fatalf("after a refused purge the queue holds %d, want 2", m)
	}
	r := hatoRun(t, url, "", "dlq", "purge", "--yes", "--json", q)
	if r.code != exitOK || strings.TrimSpace(r.stdout) != `{"purged":2,"queue":"`+q+`"}` {
		t.Errorf("purge --yes: %v", r)
	}
	if m, _ := brokertest.Inspect(t, conn, q); m != 0 {
		t.Errorf("after purge the queue holds %d", m)
	}
	if r := hatoRun(t, url, "", "dlq", "show", "no-such-queue.dlq"); r.code != exitFailure || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Errorf("show of a missing queue: %v", r)
	}
}

// TestStatusShowsNoConsumerAndDelayQueues: hato status tells a queue
// nothing consumes (a paused route) and counts its delay queue.
func TestStatusShowsNoConsumerAndDelayQueues(t *testing.T) {
	url := pkgVhost.URL(t)
	conn := brokertest.Dial(t, url, "cli-status")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := "status-" + testutil.Key(t, "q")
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(q+".retry.5s", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "", q+".retry.5s", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		r := hatoRun(t, url, "", "status", "--retry-delays", "5s", q)
		return r.code == 0 && strings.Contains(r.stdout, "0 consumers  (no consumer") &&
			strings.Contains(r.stdout, q+".retry.5s  1 message waiting")
	}, "status to show the idle queue and its waiting retry")
	// A delay queue --retry-delays names that does not exist (a wrong
	// flag) is a failure, as a missing QUEUE is.
	if r := hatoRun(t, url, "", "status", "--retry-delays", "5s,1m", q); r.code != exitFailure ||
		!strings.Contains(r.stdout, q+".retry.1m0s  error") || !strings.Contains(r.stderr, "1 of 1 queue could not be read") {
		t.Errorf("status with a missing delay queue: %v", r)
	}
}

// The new-user pass of issue 19: the wording of publish's and status's
// failures, and a dead-letter queue not called paused or down.
func TestPublishAndStatusWording(t *testing.T) {
	url := pkgVhost.URL(t)
	key := testutil.Key(t, "nobody.listens")
	r := hatoRun(t, url, "", "publish", key, "1")
	if r.code != exitFailure || !strings.Contains(r.stderr, "1 of 1 message not confirmed") ||
		!strings.Contains(r.stdout, "--allow-unroutable accepts this") {
		t.Errorf("unroutable publish: %v", r)
	}
	conn := brokertest.Dial(t, url, "cli-wording")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	dlq := "wording-" + testutil.Key(t, "q") + ".dlq"
	if _, err := ch.QueueDeclare(dlq, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	r = hatoRun(t, url, "", "publish", "--exchange", "", dlq, "1")
	if r.code != exitOK || !strings.Contains(r.stdout, "on the default exchange") {
		t.Errorf("publish to the default exchange: %v", r)
	}
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		r = hatoRun(t, url, "", "status", dlq)
		return r.code == exitOK && strings.Contains(r.stdout, dlq+"  1 message, 0 consumers\n")
	}, "status of a DLQ without the paused-or-down note")
}

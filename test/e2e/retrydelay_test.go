//go:build integration

package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/test/brokertest"
)

// TestRetryDelaySurvivesKill9 is issue 20's check for delayed retries: a
// forwarder node with one delay of 5 s fails every message's first
// delivery; 100 messages arrive, and while all 100 wait in the delay
// queue the node is killed with SIGKILL and started again. Every message
// is forwarded exactly once, none earlier than 5 s after it was
// published, none lost.
func TestRetryDelaySurvivesKill9(t *testing.T) {
	const n, delay = 100, 5 * time.Second
	in, out, queue := "retry-check.in", "retry-check.out", "retry-check"
	bin := build(t, "./test/e2e/retrynode")
	env := []string{"AMQP_URL=" + pkgVhost.URL(t), "RETRY_IN=" + in, "RETRY_OUT=" + out, "RETRY_QUEUE=" + queue}
	node := startNode(t, bin, env...)
	conn := brokertest.Dial(t, pkgVhost.URL(t), "e2e-retry-driver")
	consumed := func() bool {
		_, c, err := brokertest.InspectQueue(conn, queue)
		return err == nil && c == 1
	}
	brokertest.WaitFor(t, 30*time.Second, consumed, "the node to consume")

	var mu sync.Mutex
	sent := map[string]time.Time{}
	got := map[string][]time.Time{}
	sink, err := hato.New("sink", hato.WithURL(pkgVhost.URL(t)))
	if err != nil {
		t.Fatal(err)
	}
	_ = hato.Subscribe(sink, out, func(ctx context.Context, m *hato.Message[map[string]string]) error {
		mu.Lock()
		got[m.Data["id"]] = append(got[m.Data["id"]], time.Now())
		mu.Unlock()
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := sink.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Stop(context.Background()) })
	pub, err := hato.New("driver", hato.WithURL(pkgVhost.URL(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Stop(context.Background()) })
	for i := range n {
		id := "r-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		if err := pub.Publish(ctx, map[string]string{"id": id}, in); err != nil {
			t.Fatal(err)
		}
	}
	delayQueue := broker.RetryQueueName(queue, delay)
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		m, _, err := brokertest.InspectQueue(conn, delayQueue)
		return err == nil && m == n
	}, "all %d messages waiting in %s", n, delayQueue)
	// A copy is confirmed before its original is acked: killing the node
	// between the two redelivers the original and makes a second copy (at
	// least once, by design). Kill it once every original is acked.
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		qs, err := brokertest.ListQueues(pkgVhost.Name(t))
		if err != nil {
			return false
		}
		for _, q := range qs {
			if q.Name == queue {
				return q.Messages == 0 && q.MessagesUnacknowledged == 0
			}
		}
		return false
	}, "every original acked in %s", queue)

	// kill -9 while they wait, and start again.
	if err := node.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	node.wait(t, 10*time.Second)
	node = startNode(t, bin, env...)
	brokertest.WaitFor(t, 30*time.Second, consumed, "the restarted node to consume")

	brokertest.WaitFor(t, 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	}, "%d messages forwarded", n)
	// Nothing is left anywhere: then no duplicate can come any more.
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		m1, _, err1 := brokertest.InspectQueue(conn, queue)
		m2, _, err2 := brokertest.InspectQueue(conn, delayQueue)
		return err1 == nil && err2 == nil && m1 == 0 && m2 == 0
	}, "queue and delay queue empty")
	node.terminate(t)

	mu.Lock()
	defer mu.Unlock()
	earliest, latest := time.Hour, time.Duration(0)
	for id, at := range got {
		if len(at) != 1 {
			t.Errorf("%s forwarded %d times, want once", id, len(at))
		}
		waited := at[0].Sub(sent[id])
		earliest, latest = min(earliest, waited), max(latest, waited)
		if waited < delay {
			t.Errorf("%s forwarded %s after it was published, before its %s delay", id, waited, delay)
		}
	}
	if dlq, _, err := brokertest.InspectQueue(conn, queue+".dlq"); err == nil && dlq != 0 {
		t.Errorf("%d messages dead-lettered", dlq)
	}
	t.Logf("%d forwarded exactly once; wait from publish to forward %s to %s (delay %s)", len(got), earliest, latest, delay)
}

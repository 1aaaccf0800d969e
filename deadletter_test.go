//go:build integration

package hato_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// A dead-lettered copy outlives the original's TTL and a broker restart:
// no expiration (kept in a header), persistent.
func TestDeadLetterCopyDoesNotExpireAndIsPersistent(t *testing.T) {
	key := testutil.Key(t, "dl-ttl")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "dl-ttl", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error { return nil })
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue

	conn := brokertest.Dial(t, brokerURL(t), "test-dl-ttl")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "amq.topic", key, false, false,
			amqp.Publishing{Body: []byte("not an envelope"), MessageId: fmt.Sprintf("undecodable-%d", i),
				Expiration: "500", DeliveryMode: amqp.Transient})
		if err != nil || !dc.Wait() {
			t.Fatalf("publish: %v", err)
		}
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() >= n }, "%d messages dead-lettered", n)
	// Three times the original's TTL later (a copy that inherited it would
	// be gone by then), the copies are all still there.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if m, _ := brokertest.Inspect(t, conn, dlq); m != n {
			t.Fatalf("dead-letter queue %s holds %d messages, want %d: the copies expire", dlq, m, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range n {
		d, ok, err := ch.Get(dlq, true)
		if err != nil || !ok {
			t.Fatalf("get from %s: ok=%v %v", dlq, ok, err)
		}
		if d.Expiration != "" {
			t.Errorf("dead-letter copy has expiration %q, want none", d.Expiration)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("dead-letter copy delivery mode %d, want persistent", d.DeliveryMode)
		}
		if got := d.Headers["x-hato-original-expiration"]; got != "500" {
			t.Errorf("x-hato-original-expiration = %v, want \"500\"", got)
		}
	}
}

// Issue 8, defect 3: a message replayed from the dead-letter queue that
// comes back redelivered is handled, not acked unhandled because the
// original was dead-lettered once.
func TestReplayedDeadLetterIsHandledWhenRedelivered(t *testing.T) {
	key := testutil.Key(t, "dl-replay")
	evs := &testutil.DeliveryEvents{}
	var replayRuns, replayHandled atomic.Int32
	svc := newService(t, "dl-replay", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if _, replayed := m.Properties.Headers[actors.HeaderDeadLetteredAt]; !replayed {
			return hato.DeadLetter(errors.New("hopeless the first time"))
		}
		if replayRuns.Add(1) == 1 {
			return hato.Requeue(errors.New("busy: try again")) // comes back redelivered
		}
		replayHandled.Add(1)
		return nil
	})
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	publishN(t, publisher(t), key, []string{"replayed"})
	brokertest.WaitFor(t, 20*time.Second, func() bool { return evs.Len() == 1 }, "original dead-lettered")

	// Replay: move the copy from the dead-letter queue back to its exchange
	// and key, as an operator's shovel or script does.
	conn := brokertest.Dial(t, brokerURL(t), "test-dl-replay")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var copyMsg amqp.Delivery
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		d, ok, err := ch.Get(dlq, true)
		copyMsg = d
		return err == nil && ok
	}, "copy in %s", dlq)
	orig, _ := copyMsg.Headers[actors.HeaderOriginalKey].(string)
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "amq.topic", orig, true, false, amqp.Publishing{
		Headers: copyMsg.Headers, ContentType: copyMsg.ContentType, MessageId: copyMsg.MessageId,
		DeliveryMode: amqp.Persistent, Body: copyMsg.Body,
	})
	if err != nil || !dc.Wait() {
		t.Fatalf("replay: %v", err)
	}
	brokertest.WaitFor(t, 20*time.Second, func() bool { return replayHandled.Load() == 1 },
		"the replayed message, requeued once, handled when redelivered")
	if n := replayRuns.Load(); n != 2 {
		t.Errorf("the replayed message ran %d times, want 2", n)
	}
	if n := evs.Len(); n != 1 {
		t.Errorf("%d delivery events, want only the original's dead-lettering: %v", n, evs.Snapshot())
	}
}

// Issue 8, defect 9: a dead-letter queue deleted while the route runs is
// declared again when the copy comes back unroutable, and the copy lands in
// it; the delivery is not held forever.
func TestDeletedDeadLetterQueueIsRedeclared(t *testing.T) {
	key := testutil.Key(t, "dl-gone")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "dl-gone", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		return hato.DeadLetter(errors.New("hopeless"))
	})
	testutil.Start(t, svc)
	r := svc.Routes()[0]
	conn := brokertest.Dial(t, brokerURL(t), "test-dl-gone")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(r.DeadLetterQueue, false, false, false); err != nil {
		t.Fatalf("delete %s: %v", r.DeadLetterQueue, err)
	}
	publishN(t, publisher(t), key, []string{"to-a-missing-dlq"})
	brokertest.WaitFor(t, 20*time.Second, func() bool { return evs.Len() == 1 },
		"message dead-lettered into the re-declared %s", r.DeadLetterQueue)
	if n, _ := brokertest.Inspect(t, conn, r.DeadLetterQueue); n != 1 {
		t.Errorf("dead-letter queue holds %d messages, want 1", n)
	}
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		q, ok, err := brokertest.FindQueue(brokerVhost(t), r.Queue)
		return err == nil && ok && q.Messages == 0
	}, "original acked")
}

// Issue 8, defect 6: on a quorum queue, messages returned to the queue
// because a poison message crashed the route (they sat in the prefetch
// window) are not poison: x-delivery-count rises on every return before
// RabbitMQ 4.3, but poison is judged by what the message itself did.
func TestQuorumQueueHealthyMessagesAreNotPoisonedByAnothersCrashes(t *testing.T) {
	key := testutil.Key(t, "qq-window")
	evs := &testutil.DeliveryEvents{}
	healthy := testutil.IDs("healthy", 5)
	handled := testutil.NewCollector()
	poisonGone := make(chan struct{})
	var once sync.Once
	svc := newService(t, "qq-window", hato.WithDeliveryEvents(func(e hato.DeliveryEvent) {
		evs.Add(e)
		once.Do(func() { close(poisonGone) })
	}))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if m.Data.ID == "poison" {
			panic("poison")
		}
		// Held (in the prefetch window, running) until the poison message
		// is gone, so each of its crashes returns every healthy message.
		select {
		case <-poisonGone:
		case <-ctx.Done():
			return ctx.Err()
		}
		handled.Add(m.Data.ID)
		return nil
	}, hato.QuorumQueue(), hato.Concurrency(len(healthy)+1),
		hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 2}),
		hato.Supervision(hato.RestartPolicy{Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Multiplier: 2}, MaxRestarts: -1}))
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, append([]string{"poison"}, healthy...))
	// Every message settles: the healthy ones handled, the poison one
	// dead-lettered (and, before the fix, healthy ones too).
	brokertest.WaitFor(t, 30*time.Second, func() bool { return handled.Distinct()+evs.Len() >= len(healthy)+1 },
		"all settled")
	if n := evs.Len(); n != 1 {
		t.Errorf("%d messages dead-lettered, want 1 (the poison one): %v", n, evs.Snapshot())
	}
	if missing := handled.Missing(healthy); len(missing) > 0 {
		t.Errorf("healthy messages not handled: %v", missing)
	}
}

// Issue 8, defect 9, the bound: when the dead-letter queue cannot be
// declared again (here: no configure permission on it), the delivery is
// not held forever: it goes back to its queue, reported as ActionRequeue.
func TestUndeclarableDeadLetterQueueReturnsTheMessage(t *testing.T) {
	vhost, url := brokertest.NewVhost(t)
	key := testutil.Key(t, "dl-denied")
	evs := &testutil.DeliveryEvents{}
	var runs atomic.Int32
	svc, err := hato.New("dl-denied", append(testutil.Options(t, url), hato.WithDeliveryEvents(evs.Add))...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		runs.Add(1)
		return hato.DeadLetter(errors.New("hopeless"))
	})
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	conn := brokertest.Dial(t, url, "test-dl-denied")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(dlq, false, false, false); err != nil {
		t.Fatalf("delete %s: %v", dlq, err)
	}
	uri, err := amqp.ParseURI(url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := brokertest.Rabbitmqctl("set_permissions", "-p", vhost, uri.Username,
		"^(?!"+regexp.QuoteMeta(dlq)+"$).*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Publish(ctx, map[string]any{"id": "x"}, key); err != nil {
		t.Fatal(err)
	}
	requeued := func() bool {
		for _, e := range evs.Snapshot() {
			if e.Action == hato.ActionRequeue && errors.Is(e.Err, hato.ErrUnroutable) && e.DeadLetterQueue == dlq {
				return true
			}
		}
		return false
	}
	brokertest.WaitFor(t, 20*time.Second, func() bool { return requeued() && runs.Load() >= 2 },
		"an ActionRequeue event and the message handled again after going back to its queue")
	for _, e := range evs.Snapshot() {
		if e.Action == hato.ActionDeadLetter {
			t.Errorf("reported dead-lettered into a queue that does not exist: %+v", e)
		}
	}
}

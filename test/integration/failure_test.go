//go:build integration

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/supervisor"
	"github.com/hato-go/hato/test/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
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

// TestRetryDelayHoldsNoSlot: with Concurrency(1), a message waiting for
// its delayed retry holds no handler slot and no unacked delivery: the
// next message is handled while it waits in its delay queue, which is
// declared durable with hato's arguments, while the route's queue keeps
// tomodachi's.
func TestRetryDelayHoldsNoSlot(t *testing.T) {
	key := testutil.Key(t, "delay")
	svc := newService(t, "delayed", hato.FailureHandling(hato.FailurePolicy{RetryDelays: []time.Duration{2 * time.Second}}))
	var mu sync.Mutex
	var order []string
	release := make(chan struct{})
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		order = append(order, m.Data.ID+"/"+string(rune('0'+m.Retry)))
		mu.Unlock()
		if m.Data.ID == "a" && m.Retry == 0 {
			return errors.New("fails once")
		}
		if m.Data.ID == "b" {
			<-release // b runs while a waits in the delay queue
		}
		return nil
	}, hato.Concurrency(1))
	testutil.Start(t, svc)
	route := svc.Routes()[0]
	p := publisher(t)
	publishN(t, p, key, []string{"a", "b"})
	delayQueue := broker.RetryQueueName(route.Queue, 2*time.Second)
	conn := brokertest.Dial(t, brokerURL(t), "test-delay-slot")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 2
	}, "b to run")
	if m, _ := brokertest.Inspect(t, conn, delayQueue); m != 1 {
		t.Errorf("delay queue holds %d messages while b runs, want a", m)
	}
	close(release)
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 3
	}, "a's delayed retry")
	mu.Lock()
	if order[0] != "a/0" || order[1] != "b/0" || order[2] != "a/1" {
		t.Errorf("runs %v, want [a/0 b/0 a/1]", order)
	}
	mu.Unlock()
	q, ok, err := brokertest.FindQueue(brokerVhost(t), delayQueue)
	if err != nil || !ok {
		t.Fatalf("delay queue %s: %v %v", delayQueue, ok, err)
	}
	args := q.Arguments
	if !q.Durable || args["x-message-ttl"] != int64(2000) || args["x-dead-letter-exchange"] != "" ||
		args["x-dead-letter-routing-key"] != route.Queue || args["x-expires"] != int64(7*24*time.Hour/time.Millisecond) {
		t.Errorf("delay queue %+v", q)
	}
	main, _, err := brokertest.FindQueue(brokerVhost(t), route.Queue)
	if err != nil || main.Arguments["x-dead-letter-exchange"] != nil || main.Arguments["x-message-ttl"] != nil {
		t.Errorf("route queue arguments changed: %+v %v", main.Arguments, err)
	}
}

// outageRun is what an outage scenario measured.
type outageRun struct {
	deadLettered int           // messages in the dead-letter queue at the end
	dlqDuring    []int         // the dead-letter queue's depth, once a second from the first publish
	missing      []string      // neither forwarded nor dead-lettered
	left         int           // messages left in the route's queue
	pauses       int           // EventPaused
	doneAfter    time.Duration // from the end of the outage until every message was forwarded or dead-lettered
}

// runOutage is the forwarder of examples/amqp-example under an outage:
// 300 messages arrive at 50 msg/s and the handler fails everything for
// 10 s from the first one. It waits until every message was forwarded or
// dead-lettered, at most 90 s after the outage's end, and reports.
func runOutage(t *testing.T, opts ...hato.RouteOption) outageRun {
	in, out := testutil.Key(t, "in"), testutil.Key(t, "out")
	events := &testutil.SupervisorEvents{}
	var mu sync.Mutex
	idOf := map[string]string{} // message uuid → payload id, for the dead-letter events
	dead := map[string]bool{}
	fwd := newService(t, "forwarder", hato.WithSupervisorEvents(events.Add), hato.WithDeliveryEvents(func(e hato.DeliveryEvent) {
		if e.Action == hato.ActionDeadLetter {
			mu.Lock()
			dead[e.MessageID] = true
			mu.Unlock()
		}
	}))
	var outageEnd time.Time
	mustSubscribe(t, fwd, in, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		idOf[m.Metadata.MessageUUID] = m.Data.ID
		end := outageEnd
		mu.Unlock()
		if time.Now().Before(end) {
			return errors.New("dependency down")
		}
		return fwd.Publish(ctx, m.Data, out)
	}, opts...)
	got := testutil.NewCollector()
	sink := newService(t, "sink")
	mustSubscribe(t, sink, out, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(m.Data.ID)
		return nil
	})
	testutil.Start(t, fwd)
	testutil.Start(t, sink)
	p := publisher(t)
	conn := brokertest.Dial(t, brokerURL(t), "test-outage-inspect")
	route := fwd.Routes()[0]

	ids := fmtIDs("o", 300)
	mu.Lock()
	outageEnd = time.Now().Add(10 * time.Second)
	mu.Unlock()
	pubDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond) // 50 msg/s
		defer tick.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, id := range ids {
			<-tick.C
			if err := p.Publish(ctx, payload{ID: id}, in); err != nil {
				pubDone <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
		}
		pubDone <- nil
	}()
	var run outageRun
	settled := func() bool {
		mu.Lock()
		n := len(dead)
		mu.Unlock()
		return got.Distinct()+n >= len(ids)
	}
	deadline := outageEnd.Add(90 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		d, _ := brokertest.Inspect(t, conn, route.DeadLetterQueue)
		run.dlqDuring = append(run.dlqDuring, d)
		time.Sleep(time.Second)
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, time.Until(deadline)+time.Second, settled, "every message forwarded or dead-lettered")
	run.doneAfter = time.Since(outageEnd)
	run.deadLettered, _ = brokertest.Inspect(t, conn, route.DeadLetterQueue)
	run.left, _ = brokertest.Inspect(t, conn, route.Queue)
	mu.Lock()
	deadIDs := map[string]bool{}
	for uuid := range dead {
		deadIDs[idOf[uuid]] = true
	}
	mu.Unlock()
	for _, id := range got.Missing(ids) {
		if !deadIDs[id] {
			run.missing = append(run.missing, id)
		}
	}
	run.pauses = events.Count(hato.EventPaused)
	return run
}

func (r outageRun) String() string {
	parts := make([]string, len(r.dlqDuring))
	for i, n := range r.dlqDuring {
		parts[i] = fmt.Sprint(n)
	}
	return fmt.Sprintf("dead-lettered %d, left in queue %d, lost %d, pauses %d, all settled %s after the outage; dead-letter queue depth each second: %s",
		r.deadLettered, r.left, len(r.missing), r.pauses, r.doneAfter.Round(100*time.Millisecond), strings.Join(parts, " "))
}

// TestBreakerOutageCheck is issue 20's check: with Breaker(BreakerPolicy{})
// the forwarder loses nothing to a 10 s outage and dead-letters at most 30
// messages; without it (measured for comparison) the in-process retries
// dead-letter whatever they meet during the outage.
func TestBreakerOutageCheck(t *testing.T) {
	t.Run("breaker", func(t *testing.T) {
		r := runOutage(t, hato.Breaker(hato.BreakerPolicy{}))
		t.Logf("with the breaker: %s", r)
		if r.deadLettered > 30 {
			t.Errorf("%d dead-lettered, want at most 30", r.deadLettered)
		}
		if len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d lost (%v), %d left in the queue", len(r.missing), r.missing[:min(5, len(r.missing))], r.left)
		}
		if r.pauses == 0 {
			t.Error("the route never paused")
		}
	})
	t.Run("without", func(t *testing.T) {
		r := runOutage(t)
		t.Logf("without the breaker: %s", r)
		if len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d lost, %d left in the queue", len(r.missing), r.left)
		}
	})
	// With Concurrency(1) a retrying message holds the route's only slot,
	// which slows the flood; with ten slots the retries meet ten times as
	// many messages.
	t.Run("without, concurrency 10", func(t *testing.T) {
		r := runOutage(t, hato.Concurrency(10))
		t.Logf("without the breaker, Concurrency(10): %s", r)
	})
	t.Run("breaker, concurrency 10", func(t *testing.T) {
		r := runOutage(t, hato.Concurrency(10), hato.Breaker(hato.BreakerPolicy{}))
		t.Logf("with the breaker, Concurrency(10): %s", r)
		if r.deadLettered > 30 || len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d dead-lettered (want at most 30), %d lost, %d left in the queue", r.deadLettered, len(r.missing), r.left)
		}
	})
}

// fastSupervision restarts quickly and never gives up within a test.
var fastSupervision = hato.Supervision(hato.RestartPolicy{
	Backoff:     hato.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond},
	MaxRestarts: 1000,
})

func TestPanickingHandlerRestartsTheActorAndLosesNothing(t *testing.T) {
	key := testutil.Key(t, "panics")
	ev := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	var seen sync.Map
	svc := newService(t, "panicky", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		id := idOf(m)
		// Every tenth message panics the first time it is handled.
		if _, again := seen.LoadOrStore(id, true); !again && id[len(id)-1] == '3' {
			panic("handler bug on " + id)
		}
		got.Add(id)
		return nil
	}, hato.Concurrency(4))
	testutil.Start(t, svc)

	ids := fmtIDs("p", 300)
	publishN(t, publisher(t), key, ids)
	got.WaitDistinct(t, len(ids), 30*time.Second)
	if missing := got.Missing(ids); len(missing) > 0 {
		t.Fatalf("lost %d messages: %v", len(missing), missing)
	}
	if n := ev.Count(hato.EventFailed); n == 0 {
		t.Error("no EventFailed: the panics did not reach the supervisor")
	}
	brokertest.WaitFor(t, 5*time.Second, func() bool { return ev.Count(hato.EventRestarted) > 0 }, "a restart")
	select {
	case <-svc.Failed():
		t.Fatalf("service failed: %v", svc.Err())
	default:
	}
}

func TestConsumerActorStoppedFromOutsideIsRespawned(t *testing.T) {
	key := testutil.Key(t, "killed")
	ev := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	var handled atomic.Int32
	svc := newService(t, "killable", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		handled.Add(1)
		time.Sleep(time.Millisecond) // a handler doing some work
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	pid := svc.Routes()[0].Actor
	sys := svc.ActorSystem()

	ids := fmtIDs("k", 600)
	published := publishAsync(publisher(t), key, ids)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return handled.Load() > 100 }, "some handled")
	sys.Root.Stop(pid)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 1 }, "respawn")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return handled.Load() > 300 }, "more handled")
	sys.Root.Poison(pid)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 2 }, "second respawn")

	if err := <-published; err != nil {
		t.Fatal(err)
	}
	got.WaitDistinct(t, len(ids), 30*time.Second)
	if missing := got.Missing(ids); len(missing) > 0 {
		t.Fatalf("lost %d messages", len(missing))
	}
	if ev.Count(hato.EventStopped) != 2 {
		t.Errorf("EventStopped %d, want 2", ev.Count(hato.EventStopped))
	}
}

func TestARouteThatGivesUpFailsTheServiceLoudly(t *testing.T) {
	key := testutil.Key(t, "hopeless")
	ev := &testutil.SupervisorEvents{}
	svc := newService(t, "hopeless", hato.WithSupervisorEvents(ev.Add), hato.Supervision(hato.RestartPolicy{
		Backoff:     hato.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		MaxRestarts: 2,
		Window:      time.Minute,
	}), hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 100}))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		panic("always")
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, fmtIDs("h", 5))
	select {
	case <-svc.Failed():
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not fail after its route exhausted the restart budget")
	}
	if !errorsIs(svc.Err(), hato.ErrRouteFailed) || !errorsIs(svc.Err(), supervisor.ErrGaveUp) {
		t.Errorf("Err() = %v, want ErrRouteFailed wrapping ErrGaveUp", svc.Err())
	}
	if ev.Count(hato.EventGaveUp) != 1 {
		t.Errorf("EventGaveUp reported %d times, want 1", ev.Count(hato.EventGaveUp))
	}
	// The messages are still in the queue, not lost.
	testutil.Stop(t, svc)
	conn := brokertest.Dial(t, brokerURL(t), "test-hopeless")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return n == 5
	}, "the 5 messages back in the queue")
}

// publishWithUUID publishes a JSON envelope with a fixed message uuid, as
// a sender retrying a publish would (hato's Publish makes a new one).
func publishWithUUID(t *testing.T, p *hato.Service, key, uuid, id string) {
	t.Helper()
	body, err := envelope.JSON.Build(envelope.Build{
		Service: envelope.Service{Name: "dedupe-sender", UUID: "sender"}, Topic: key, MessageUUID: uuid, Time: time.Now(),
	}, map[string]any{"id": id}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, body, key, hato.Envelope(envelope.Raw)); err != nil {
		t.Fatal(err)
	}
}

// waitSettled waits until the queue holds nothing, ready or unacked.
func waitSettled(t *testing.T, queue string) {
	t.Helper()
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		q, ok, err := brokertest.FindQueue(brokerVhost(t), queue)
		return err == nil && ok && q.Messages == 0 && q.MessagesUnacknowledged == 0
	}, "queue %s empty, nothing unacked", queue)
}

// countingStore wraps a store, counting records and running check (if
// set) at each one.
type countingStore struct {
	hato.DedupeStore
	records atomic.Int64
	check   func()
}

func (c *countingStore) Record(ctx context.Context, key string, ttl time.Duration) error {
	if c.check != nil {
		c.check()
	}
	c.records.Add(1)
	return c.DedupeStore.Record(ctx, key, ttl)
}

// The same message uuid published twice is handled once; both copies are
// acked and the duplicate is counted and reported.
func TestDedupeHandlesOnceAndAcksBoth(t *testing.T) {
	key := testutil.Key(t, "dedupe")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "dedupe", hato.WithDeliveryEvents(evs.Add))
	var mu sync.Mutex
	var handled []string
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		handled = append(handled, m.Data.ID)
		mu.Unlock()
		return nil
	}, hato.Dedupe(time.Minute, nil))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-a", "a1")
	publishWithUUID(t, p, key, "uuid-a", "a2")
	publishWithUUID(t, p, key, "uuid-b", "b")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 2 && svc.DedupeStats().Duplicates == 1
	}, "two handled, one duplicate")
	waitSettled(t, routeQueue(t, svc, 0))

	mu.Lock()
	got := append([]string(nil), handled...)
	mu.Unlock()
	if len(got) != 2 || got[0] != "a1" || got[1] != "b" {
		t.Fatalf("handled %v, want [a1 b]", got)
	}
	evList := evs.Snapshot()
	if len(evList) != 1 || evList[0].Action != hato.ActionDuplicate || evList[0].Attempts != 0 {
		t.Fatalf("events %+v, want one duplicate", evList)
	}
	if st := svc.DedupeStats(); st.Duplicates != 1 || st.StoreErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A failed attempt records nothing: the message is recorded once, after
// the retry that succeeded, and only then is a copy a duplicate.
func TestDedupeRecordsOnlyAfterSuccess(t *testing.T) {
	key := testutil.Key(t, "dedupe-retry")
	var calls atomic.Int64
	store := &countingStore{DedupeStore: hato.NewMemoryDedupeStore(0)}
	store.check = func() {
		if n := calls.Load(); n != 2 {
			t.Errorf("recorded after %d handler calls, want after the second (the success)", n)
		}
	}
	svc := newService(t, "dedupe-retry")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if calls.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	}, hato.Dedupe(time.Minute, store), hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1},
	}))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-retry", "1")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return store.records.Load() == 1 }, "the success recorded")
	publishWithUUID(t, p, key, "uuid-retry", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the copy skipped")
	waitSettled(t, routeQueue(t, svc, 0))
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (a failure, a success; the copy skipped)", n)
	}
	if n := store.records.Load(); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// A handler's publishes must be confirmed before its message is recorded:
// an attempt whose publish failed records nothing, and the record of the
// one that succeeded comes after the broker confirmed its publish.
func TestDedupeRecordsAfterPublishesConfirmed(t *testing.T) {
	key := testutil.Key(t, "dedupe-pub")
	onward := testutil.Key(t, "dedupe-onward")
	unroutable := testutil.Key(t, "dedupe-nowhere")
	conn := brokertest.Dial(t, brokerURL(t), "test-dedupe-pub")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(onward, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(onward, onward, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}

	var calls atomic.Int64
	store := &countingStore{DedupeStore: hato.NewMemoryDedupeStore(0)}
	store.check = func() {
		if n, _, err := brokertest.InspectQueue(conn, onward); err != nil || n != 1 {
			t.Errorf("recorded with %d messages in the onward queue (err %v), want its confirmed publish there", n, err)
		}
	}
	svc := newService(t, "dedupe-pub")
	var svcRef atomic.Pointer[hato.Service]
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		to := onward
		if calls.Add(1) == 1 {
			to = unroutable // the publish fails after the handler returned
		}
		return svcRef.Load().Publish(ctx, map[string]any{"id": "onward"}, to, hato.Mandatory())
	}, hato.Dedupe(time.Minute, store), hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1},
	}))
	svcRef.Store(svc)
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-pub", "1")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return store.records.Load() == 1 }, "the success recorded")
	publishWithUUID(t, p, key, "uuid-pub", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the copy skipped")
	waitSettled(t, routeQueue(t, svc, 0))
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
}

// errStore fails every call.
type errStore struct{}

func (errStore) Seen(context.Context, string) (bool, error) { return false, errors.New("store down") }
func (errStore) Record(context.Context, string, time.Duration) error {
	return errors.New("store down")
}

// A store that fails leaves de-duplication off (fail open): both copies
// are handled and acked, and the errors are counted.
func TestDedupeStoreErrorFailsOpen(t *testing.T) {
	key := testutil.Key(t, "dedupe-err")
	var calls atomic.Int64
	svc := newService(t, "dedupe-err", hato.Dedupe(time.Minute, errStore{}))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		calls.Add(1)
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-err", "1")
	publishWithUUID(t, p, key, "uuid-err", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		return calls.Load() == 2 && svc.DedupeStats().StoreErrors == 4
	}, "both handled, four store errors (two lookups, two records)")
	waitSettled(t, routeQueue(t, svc, 0))
	if st := svc.DedupeStats(); st.Duplicates != 0 {
		t.Fatalf("stats %+v, want no duplicate", st)
	}
}

// Two copies in flight at once (Concurrency 2): the second waits for the
// first instead of running alongside it, then is skipped as a duplicate.
func TestDedupeCopiesInFlightRunOnce(t *testing.T) {
	key := testutil.Key(t, "dedupe-conc")
	var calls atomic.Int64
	release := make(chan struct{})
	svc := newService(t, "dedupe-conc")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, hato.Dedupe(time.Minute, nil), hato.Concurrency(2))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-conc", "1")
	publishWithUUID(t, p, key, "uuid-conc", "2")
	// Both copies are delivered to the route (none ready in the queue)
	// while the first handler is held.
	queue := routeQueue(t, svc, 0)
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		q, ok, err := brokertest.FindQueue(brokerVhost(t), queue)
		return err == nil && ok && q.MessagesUnacknowledged == 2 && calls.Load() == 1
	}, "both copies delivered, one handler running")
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d handlers ran for one uuid", n)
	}
	close(release)
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the second copy skipped")
	waitSettled(t, queue)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hato-go/hato/broker"
)

// A failed delivery's copy goes to its delay queue; the original is acked
// only once the copy is confirmed.
func TestConsumerDelayedRetryAcksAfterConfirm(t *testing.T) {
	conn := &fakeConn{}
	fail := func(context.Context, *broker.Delivery) error { return errors.New("boom") }
	r := newConsumer(t, &Route{
		Handle:  handlers{"bad": fail}.handle,
		Failure: FailurePolicy{Backoff: fastRetry, DeadLetterQueue: "q.dlq", RetryDelays: []time.Duration{5 * time.Second}}.WithDefaults(),
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "bad", false)
	cp := conn.publish(t, 0)
	if cp.RoutingKey != "q.retry.5s" || cp.Exchange != "" || !cp.Mandatory || cp.Msg.Headers[HeaderRetry] != int64(1) {
		t.Fatalf("copy to %q/%q mandatory %v headers %v", cp.Exchange, cp.RoutingKey, cp.Mandatory, cp.Msg.Headers)
	}
	if _, ok := cp.Msg.Headers[HeaderDeadLetteredAt]; ok {
		t.Error("a retry copy carries the dead-lettered-at stamp")
	}
	if s.has("ack 1") {
		t.Fatal("original acked before its copy was confirmed")
	}
	cp.Finish(nil)
	waitFor(t, "ack 1 after the confirm", func() bool { return s.has("ack 1") })
	if r.state.failures(messageKey(s.delivery(1, "bad", false))) != 0 {
		t.Error("the route still remembers the failures of a message sent to its delay queue")
	}
}

// A redelivered message whose attempts the route already counted (its
// copy's ack was lost with the channel) goes to its delay queue, not to
// the dead-letter queue.
func TestConsumerRedeliveredExhaustedMessageIsDelayedNotDeadLettered(t *testing.T) {
	conn := &fakeConn{}
	r := newConsumer(t, &Route{
		Handle:  handlers{}.handle,
		Failure: FailurePolicy{Backoff: fastRetry, DeadLetterQueue: "q.dlq", RetryDelays: []time.Duration{time.Second}}.WithDefaults(),
	}, conn)
	s := r.sessions.await(t, 0)
	d := s.delivery(1, "m", true)
	r.state.fail(messageKey(d))
	s.cfg.Deliver(d)
	if cp := conn.publish(t, 0); cp.RoutingKey != "q.retry.1s" {
		t.Errorf("published to %q, want the delay queue q.retry.1s", cp.RoutingKey)
	}
}

// A message back from its delay queue (through the default exchange, with
// the queue's name as routing key) gets its exchange and routing key back.
func TestRestoreRetried(t *testing.T) {
	d := &broker.Delivery{}
	d.Exchange, d.RoutingKey = "", "q"
	d.Headers = map[string]any{HeaderRetry: int64(1), HeaderOriginalExchange: "amq.topic", HeaderOriginalKey: "orders.created"}
	restoreRetried(d)
	if d.Exchange != "amq.topic" || d.RoutingKey != "orders.created" {
		t.Errorf("restored %q %q", d.Exchange, d.RoutingKey)
	}
	replay := &broker.Delivery{}
	replay.Exchange, replay.RoutingKey = "", "q"
	replay.Headers = map[string]any{HeaderOriginalExchange: "amq.topic", HeaderOriginalKey: "k"}
	restoreRetried(replay)
	if replay.RoutingKey != "q" {
		t.Error("a message without x-hato-retry was changed")
	}
}

// Tripping the breaker cancels the session, returns the delivery waiting
// for an in-process retry uncounted, closes the session once idle and
// consumes again with the trial prefetch after the cooldown.
func TestConsumerBreakerTripReturnsRetryWaitingUncounted(t *testing.T) {
	conn := &fakeConn{}
	fail := func(context.Context, *broker.Delivery) error { return errors.New("down") }
	var events []BreakerEvent
	r := newConsumer(t, &Route{
		Handle:      handlers{"a": fail, "b": fail}.handle,
		Concurrency: 2,
		Prefetch:    50,
		Failure: FailurePolicy{MaxAttempts: 5, DeadLetterQueue: "q.dlq",
			Backoff: fastRetry}.WithDefaults(),
		Breaker: &BreakerPolicy{MinRuns: 3, FailureRatio: 1, Cooldown: 50 * time.Millisecond, Trials: 2},
		BreakerEvents: func(e BreakerEvent) {
			events = append(events, e) // the actor's goroutine only
		},
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "a", false)
	s.deliver(2, "b", false)
	waitFor(t, "the trip to return both", func() bool { return s.has("nack 1 requeue") && s.has("nack 2 requeue") })
	if !s.has("cancel") {
		t.Error("no basic.cancel on trip")
	}
	waitFor(t, "the idle paused session to close", func() bool { return s.isEnded() })
	for _, body := range []string{"a", "b"} {
		if n := r.state.failures(messageKey(s.delivery(1, body, false))); n != 0 {
			t.Errorf("%s: %d failed attempts remembered, want none (returned uncounted)", body, n)
		}
	}
	if conn.publishes() != 0 {
		t.Error("something was dead-lettered")
	}
	trial := r.sessions.await(t, 1)
	if trial.cfg.Prefetch != 2 {
		t.Errorf("trial session prefetch %d, want Trials 2", trial.cfg.Prefetch)
	}
	if r.rep.failedReports() != nil {
		t.Errorf("pause reported as a failure: %v", r.rep.failedReports())
	}
}

func FuzzRetryOf(f *testing.F) {
	f.Add(int64(0))
	f.Add(int64(3))
	f.Add(int64(-1))
	f.Add(int64(1) << 40)
	f.Fuzz(func(t *testing.T, n int64) {
		for _, v := range []any{n, int32(n), int16(n), int8(n), uint8(n), "3", nil} {
			if got := RetryOf(map[string]any{HeaderRetry: v}); got < 0 {
				t.Errorf("RetryOf(%v %T) = %d", v, v, got)
			}
		}
	})
}

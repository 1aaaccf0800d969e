package actors

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

var fastRetry = supervisor.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond, Multiplier: 2}

func TestConsumerAcksAfterHandlerSuccess(t *testing.T) {
	r := newConsumer(t, &Route{Handle: handlers{}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "a", false)
	s.deliver(2, "b", false)
	waitFor(t, "both acked", func() bool { return s.has("ack 1") && s.has("ack 2") })
	if s.index("ack 1") > s.index("ack 2") {
		t.Errorf("concurrency 1 acked out of order: %v", s.log)
	}
}

// A delivery is acked only once every publish its handler made is
// confirmed, and a failed publish makes the handler run again. The delivery
// keeps its handler slot until then: with concurrency 1 the next delivery
// runs only after it, so order holds across a retry after a failed publish.
func TestConsumerAcksOnlyAfterHandlerPublishesConfirmed(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("StrictOrder=%v", strict), func(t *testing.T) { ackAfterConfirm(t, strict) })
	}
}

// ackAfterConfirm: delivery 1's handler publishes, delivery 2's does not;
// the publish fails, so 1 runs again. With StrictOrder 1 keeps its slot
// until its publishes are confirmed: 2 runs after 1's retry and is acked
// after it. Without, 2 runs while 1's publish is pending (pipelined) and 1
// runs again after it; either way 1 is acked once, after its confirm.
func ackAfterConfirm(t *testing.T, strict bool) {
	conn := &fakeConn{}
	runs := make(chan string, 4)
	var r *consumerRig
	publish := func(ctx context.Context, _ *broker.Delivery) error {
		runs <- "pub"
		tr := TrackerFrom(ctx)
		if tr == nil || !tr.Add() {
			return errors.New("no tracker in the handler's context")
		}
		r.sys.Root.Send(r.connPID, &Publish{Req: &broker.Request{RoutingKey: "out", Done: tr.Done}})
		return nil
	}
	plain := func(context.Context, *broker.Delivery) error {
		runs <- "plain"
		return nil
	}
	r = newConsumer(t, &Route{Handle: handlers{"pub": publish, "plain": plain}.handle, Failure: FailurePolicy{Backoff: fastRetry}, StrictOrder: strict}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "pub", false)
	first := conn.publish(t, 0)
	s.deliver(2, "plain", false)
	want := []string{"pub", "pub", "plain"}
	if !strict {
		want = []string{"pub", "plain", "pub"}
		waitFor(t, "ack 2 while 1's publish is pending", func() bool { return s.has("ack 2") })
	}
	// The publish fails: the handler runs again and publishes again.
	first.Finish(errors.New("nacked by broker"))
	second := conn.publish(t, 1)
	if s.has("ack 1") || (strict && s.has("ack 2")) {
		t.Fatalf("acked before the retried publish was confirmed: %v", s.log)
	}
	second.Finish(nil)
	waitFor(t, "both acked", func() bool { return s.has("ack 1") && s.has("ack 2") })
	if s.count("ack 1") != 1 || (strict && s.index("ack 1") > s.index("ack 2")) {
		t.Errorf("settlements %v, want ack 1 once (before ack 2 with StrictOrder)", s.log)
	}
	if got := []string{recv(t, runs), recv(t, runs), recv(t, runs)}; !slices.Equal(got, want) {
		t.Errorf("handler runs %v, want %v", got, want)
	}
}

// A failing handler is retried MaxAttempts times, then the message is
// republished to the dead-letter queue, and the original is acked only once
// the copy is confirmed.
func TestConsumerDeadLettersAfterRetries(t *testing.T) {
	conn := &fakeConn{}
	var attempts int
	fail := func(context.Context, *broker.Delivery) error {
		attempts++ // handlers of one route run one at a time here
		return errors.New("boom")
	}
	r := newConsumer(t, &Route{
		Handle:  handlers{"bad": fail}.handle,
		Failure: FailurePolicy{MaxAttempts: 3, Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
		Service: "svc",
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "bad", false)
	dl := conn.publish(t, 0)
	if attempts != 3 {
		t.Errorf("handler ran %d times before dead-lettering, want 3", attempts)
	}
	if dl.Exchange != "" || dl.RoutingKey != "q.dlq" || !dl.Mandatory || string(dl.Msg.Body) != "bad" {
		t.Errorf("dead-letter publish = exchange %q key %q mandatory %v body %q", dl.Exchange, dl.RoutingKey, dl.Mandatory, dl.Msg.Body)
	}
	h := dl.Msg.Headers
	if h[HeaderAttempts] != int64(3) || h[HeaderOriginalQueue] != "q" || h[HeaderService] != "svc" || h[HeaderRoute] != "route" {
		t.Errorf("dead-letter headers = %v", h)
	}
	if reason, _ := h[HeaderReason].(string); reason != "failed 3 attempts: boom" {
		t.Errorf("reason header = %q", reason)
	}
	s.deliver(2, "ok", false)
	waitFor(t, "ack 2", func() bool { return s.has("ack 2") })
	if s.has("ack 1") || s.has("nack 1 requeue") || s.has("reject 1") {
		t.Fatalf("original settled before its dead-letter copy was confirmed: %v", s.log)
	}
	dl.Finish(nil)
	waitFor(t, "ack 1 after the dead-letter confirm", func() bool { return s.has("ack 1") })
	waitFor(t, "the dead-letter event", func() bool { return len(r.events.all()) == 1 })
	if ev := r.events.all()[0]; ev.Action != DeadLetter || ev.DeadLetterQueue != "q.dlq" || ev.Attempts != 3 || ev.MessageID != "bad" {
		t.Errorf("event = %+v", ev)
	}
}

// A failed dead-letter publish holds the original and tries again; it is
// never acked on a failed copy.
func TestConsumerRetriesFailedDeadLetterPublish(t *testing.T) {
	conn := &fakeConn{}
	dead := func(context.Context, *broker.Delivery) error {
		return &Directive{Action: DeadLetter, Err: errors.New("undecodable")}
	}
	r := newConsumer(t, &Route{
		Handle: handlers{"x": dead}.handle,
		// Backoff.Delay(3) paces the dead-letter retry.
		Failure: FailurePolicy{Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "x", false)
	conn.publish(t, 0).Finish(errors.New("dead-letter queue missing"))
	again := conn.publish(t, 1)
	if s.has("ack 1") {
		t.Fatal("original acked although its dead-letter copy failed")
	}
	again.Finish(nil)
	waitFor(t, "ack 1", func() bool { return s.has("ack 1") })
}

// Decode failures and other permanent errors (a DeadLetter directive) are
// dead-lettered at once, without retries; without a dead-letter queue they
// are rejected.
func TestConsumerDeadLettersPermanentErrorsAtOnce(t *testing.T) {
	for _, dlq := range []string{"q.dlq", ""} {
		t.Run("dlq="+dlq, func(t *testing.T) {
			conn := &fakeConn{autoConfirm: true}
			var runs int
			undecodable := func(context.Context, *broker.Delivery) error {
				runs++
				return &Directive{Action: DeadLetter, Err: errors.New("decode: invalid JSON")}
			}
			r := newConsumer(t, &Route{
				Handle:  handlers{"{": undecodable}.handle,
				Failure: FailurePolicy{MaxAttempts: 5, Backoff: fastRetry, DeadLetterQueue: dlq},
			}, conn)
			s := r.sessions.await(t, 0)
			s.deliver(1, "{", false)
			if dlq == "" {
				waitFor(t, "reject 1", func() bool { return s.has("reject 1") })
				if conn.publishes() != 0 {
					t.Errorf("published %d messages with no dead-letter queue", conn.publishes())
				}
			} else {
				waitFor(t, "ack 1", func() bool { return s.has("ack 1") })
				req := conn.publish(t, 0)
				if req.RoutingKey != dlq || req.Msg.Headers[HeaderAttempts] != int64(1) {
					t.Errorf("dead-letter publish to %q with attempts %v", req.RoutingKey, req.Msg.Headers[HeaderAttempts])
				}
			}
			if runs != 1 {
				t.Errorf("handler ran %d times, want 1", runs)
			}
			waitFor(t, "the event", func() bool { return len(r.events.all()) == 1 })
			if ev := r.events.all()[0]; ev.Action != DeadLetter {
				t.Errorf("event = %+v", ev)
			}
		})
	}
}

// Requeue and Drop directives: nack with requeue; ack with an event.
func TestConsumerRequeueAndDropDirectives(t *testing.T) {
	r := newConsumer(t, &Route{Handle: handlers{
		"requeue": func(context.Context, *broker.Delivery) error { return &Directive{Action: Requeue} },
		"drop":    func(context.Context, *broker.Delivery) error { return &Directive{Action: Drop} },
	}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "requeue", false)
	s.deliver(2, "drop", false)
	waitFor(t, "nack 1 requeue and ack 2", func() bool { return s.has("nack 1 requeue") && s.has("ack 2") })
	if s.has("ack 1") {
		t.Errorf("requeued delivery also acked: %v", s.log)
	}
	waitFor(t, "the drop event", func() bool { return len(r.events.all()) == 1 })
	if ev := r.events.all()[0]; ev.Action != Drop || ev.MessageID != "drop" {
		t.Errorf("event = %+v", ev)
	}
}

// A handler panic crashes the actor: its supervisor restarts it, the
// session is closed with the delivery unsettled (the broker requeues it),
// and the new incarnation consumes on a new session. A handler of the old
// incarnation finishing late settles nothing.
func TestConsumerPanicRestartsAndNewIncarnationConsumes(t *testing.T) {
	hold := newGate(t)
	trs := make(chan *Tracker, 1)
	r := newConsumer(t, &Route{Concurrency: 2, Handle: handlers{
		"slow": func(ctx context.Context, _ *broker.Delivery) error {
			trs <- TrackerFrom(ctx)
			hold.wait()
			return nil
		},
		"panic": func(context.Context, *broker.Delivery) error { panic("handler bug") },
	}.handle}, &fakeConn{})
	s1 := r.sessions.await(t, 0)
	s1.deliver(1, "slow", false)
	tr := recv(t, trs)
	s1.deliver(2, "panic", false)

	s2 := r.sessions.await(t, 1)
	if !s1.isEnded() || !s1.has("close") {
		t.Fatalf("the crashed incarnation's session was not closed: %v", s1.log)
	}
	crashes := r.rep.crashes()
	if len(crashes) != 1 {
		t.Fatalf("supervisor saw %d failures, want 1", len(crashes))
	}
	if p, ok := crashes[0].(*HandlerPanic); !ok || p.Value != "handler bug" || p.MessageID != "panic" || len(p.Stack) == 0 {
		t.Errorf("failure = %#v, want the HandlerPanic", crashes[0])
	}
	// The old incarnation's handler returns now.
	hold.open()
	handlerReturned(t, tr)
	// The new incarnation consumes; its mailbox had the stale result first.
	s2.deliver(1, "ok", false)
	waitFor(t, "ack 1 on the new session", func() bool { return s2.has("ack 1") })
	if n := s2.count("ack 1"); n != 1 {
		t.Errorf("new session's delivery 1 acked %d times", n)
	}
	for _, e := range append(s1.late(), s1.log...) {
		if e != "close" {
			t.Errorf("old session settled %q; the panicking and the stale delivery must go back unsettled", e)
		}
	}
	waitFor(t, "ready again", func() bool { return r.rep.readyCount() >= 2 })
	// The crash is remembered for poison detection across incarnations.
	if n := r.state.count(messageKey(s1.delivery(2, "panic", false))); n != 1 {
		t.Errorf("crash count of the panicking message = %d, want 1", n)
	}
}

// A message that crashes its handler again and again is dead-lettered once
// its redeliveries pass MaxRedeliveries, not run forever.
func TestConsumerPoisonMessageDeadLettered(t *testing.T) {
	conn := &fakeConn{autoConfirm: true}
	r := newConsumer(t, &Route{
		Handle:  handlers{"poison": func(context.Context, *broker.Delivery) error { panic("again") }}.handle,
		Failure: FailurePolicy{MaxRedeliveries: 2, Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
	}, conn)
	for i := range 3 {
		s := r.sessions.await(t, i)
		s.deliver(1, "poison", i > 0)
	}
	s := r.sessions.await(t, 3)
	s.deliver(1, "poison", true)
	waitFor(t, "the poison message acked after dead-lettering", func() bool { return s.has("ack 1") })
	if n := len(r.rep.crashes()); n != 3 {
		t.Errorf("%d crashes, want 3", n)
	}
	if reason, _ := conn.publish(t, 0).Msg.Headers[HeaderReason].(string); reason != "poison message: crashed or requeued 3 times (limit 2)" {
		t.Errorf("reason = %q", reason)
	}
}

// When a session ends (the channel died), what it delivered is void: a
// handler of the old session finishing late must not settle anything, on
// the old session or the new one.
func TestConsumerIgnoresResultsOfAnEndedSession(t *testing.T) {
	hold := newGate(t)
	trs := make(chan *Tracker, 1)
	r := newConsumer(t, &Route{Handle: handlers{
		"slow": func(ctx context.Context, _ *broker.Delivery) error {
			trs <- TrackerFrom(ctx)
			hold.wait()
			return nil
		},
	}.handle}, &fakeConn{})
	s1 := r.sessions.await(t, 0)
	s1.deliver(1, "slow", false)
	tr := recv(t, trs)
	s1.end(errors.New("channel closed by broker"))
	s2 := r.sessions.await(t, 1)
	waitFor(t, "the loss reported", func() bool { return len(r.rep.failedReports()) == 1 })
	if f := r.rep.failedReports()[0]; f.Permanent || f.Name != "route" {
		t.Errorf("ChildFailed = %+v", f)
	}
	// A delivery of the ended session arriving late is void too.
	s1.deliver(2, "ok", false)
	hold.open()
	handlerReturned(t, tr)
	s2.deliver(1, "ok", false)
	waitFor(t, "ack 1 on the new session", func() bool { return s2.has("ack 1") })
	s2.deliver(2, "ok", false)
	waitFor(t, "ack 2 on the new session", func() bool { return s2.has("ack 2") })
	if n := s2.count("ack 1"); n != 1 {
		t.Errorf("new session's delivery 1 acked %d times: %v", n, s2.log)
	}
	if late := s1.late(); len(late) != 0 {
		t.Errorf("ended session settled %v", late)
	}
	waitFor(t, "ready again", func() bool { return r.rep.readyCount() >= 2 })
}

// Drain: stop taking deliveries, finish the ones in hand, close the
// session, then signal Done.
func TestConsumerDrainFinishesInHandThenCloses(t *testing.T) {
	hold := newGate(t)
	running := make(chan struct{}, 1)
	r := newConsumer(t, &Route{Handle: handlers{
		"slow": func(context.Context, *broker.Delivery) error {
			running <- struct{}{}
			hold.wait()
			return nil
		},
	}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "slow", false)
	recv(t, running)
	s.deliver(2, "queued", false) // waits for the handler slot
	done := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: done})
	waitFor(t, "the session cancelled", func() bool { return s.has("cancel") })
	waitFor(t, "the queued delivery returned", func() bool { return s.has("nack 2 requeue") })
	s.deliver(3, "late", false) // in flight before the cancel took effect
	waitFor(t, "the late delivery returned", func() bool { return s.has("nack 3 requeue") })
	select {
	case <-done:
		t.Fatal("drain finished while a handler was running")
	default:
	}
	if s.has("close") {
		t.Fatal("session closed while a handler was running")
	}
	hold.open()
	waitClosed(t, done, "drain done")
	if a, c := s.index("ack 1"), s.index("close"); a < 0 || c < a {
		t.Errorf("want ack 1 then close, got %v", s.log)
	}
	if slices.Contains(s.log, "ack 2") || slices.Contains(s.log, "ack 3") {
		t.Errorf("deliveries taken during the drain were handled: %v", s.log)
	}
	if r.sessions.n() != 1 {
		t.Errorf("a drained consumer opened %d sessions", r.sessions.n())
	}
}

// A second drain of a drained consumer (the supervisor drains again when a
// Stop follows a drain) completes at once: the route holds nothing.
func TestConsumerSecondDrainCompletesAtOnce(t *testing.T) {
	r := newConsumer(t, &Route{Handle: handlers{}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	first := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: first})
	waitClosed(t, first, "first drain done")
	waitFor(t, "the session closed", func() bool { return s.has("close") })
	second := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: second})
	waitClosed(t, second, "second drain done")
}

// At the drain deadline the handlers' context is cancelled, the unfinished
// count reported, and the session closed with the delivery unsettled.
func TestConsumerDrainTimeoutCancelsHandlers(t *testing.T) {
	cancelled := make(chan error, 1)
	running := make(chan struct{}, 1)
	r := newConsumer(t, &Route{Handle: handlers{
		"stuck": func(ctx context.Context, _ *broker.Delivery) error {
			running <- struct{}{}
			<-ctx.Done()
			cancelled <- ctx.Err()
			return ctx.Err()
		},
	}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "stuck", false)
	recv(t, running)
	done := make(chan struct{})
	unfinished := make(chan int, 1)
	r.sys.Root.Send(r.pid, &supervisor.Drain{
		Deadline: time.Now().Add(50 * time.Millisecond), Done: done,
		Unfinished: func(n int) { unfinished <- n },
	})
	waitClosed(t, done, "drain done at its deadline")
	if n := recv(t, unfinished); n != 1 {
		t.Errorf("unfinished = %d, want 1", n)
	}
	if err := recv(t, cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("handler's ctx ended with %v", err)
	}
	if !s.has("close") || s.has("ack 1") {
		t.Errorf("want the session closed with delivery 1 unsettled, got %v", s.log)
	}
}

// A drain with nothing in hand closes the session at once, and the actor
// does not reopen it.
func TestConsumerDrainIdle(t *testing.T) {
	r := newConsumer(t, &Route{Handle: handlers{}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	done := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: done})
	waitClosed(t, done, "drain done")
	if !s.has("close") {
		t.Errorf("session not closed: %v", s.log)
	}
	if len(r.rep.failedReports()) != 0 || r.sessions.n() != 1 {
		t.Errorf("a drained consumer reported %v and opened %d sessions", r.rep.failedReports(), r.sessions.n())
	}
}

// A session that cannot start is retried after the Reopen backoff and
// reported as unavailable each time; a permanent refusal (a conflicting declaration) is reported to the
// supervisor and not retried.
func TestConsumerSessionStartFailures(t *testing.T) {
	t.Run("transient", func(t *testing.T) {
		r := startConsumer(t, &Route{Handle: handlers{}.handle}, &fakeConn{},
			[]error{broker.ErrClosed, broker.ErrClosed})
		s := r.sessions.await(t, 0)
		if n := r.sessions.starts(); n != 3 {
			t.Errorf("%d session starts, want 3", n)
		}
		waitFor(t, "ChildReady", func() bool { return r.rep.readyCount() == 1 })
		s.deliver(1, "ok", false)
		waitFor(t, "ack 1", func() bool { return s.has("ack 1") })
		// Each transient failure is reported as unavailable (not
		// permanent), so the supervisor's events show the route waiting.
		f := r.rep.failedReports()
		if len(f) != 2 {
			t.Errorf("%d failure reports, want one per transient failure (2)", len(f))
		}
		for _, e := range f {
			if e.Permanent {
				t.Errorf("a transient start failure was reported as permanent: %v", e.Err)
			}
		}
	})
	t.Run("permanent", func(t *testing.T) {
		refused := fmt.Errorf("declare queue: %w", broker.ErrPreconditionFailed)
		r := startConsumer(t, &Route{Handle: handlers{}.handle}, &fakeConn{}, []error{refused})
		waitFor(t, "the permanent failure reported", func() bool { return len(r.rep.failedReports()) == 1 })
		if f := r.rep.failedReports()[0]; !f.Permanent || !errors.Is(f.Err, broker.ErrPreconditionFailed) {
			t.Errorf("ChildFailed = %+v, want permanent", f)
		}
		// The actor does not retry: a drain now finds nothing open and is
		// done at once, and no session was ever started.
		done := make(chan struct{})
		r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: done})
		waitClosed(t, done, "drain done")
		if n := r.sessions.starts(); n != 1 {
			t.Errorf("%d session starts after a permanent failure, want 1", n)
		}
	})
}

// A handler failing while the route drains is not retried: its delivery
// goes back to the queue and the drain completes.
func TestConsumerFailureWhileDrainingReturnsDelivery(t *testing.T) {
	hold := newGate(t)
	running := make(chan struct{}, 1)
	r := newConsumer(t, &Route{
		Handle: handlers{"fail": func(context.Context, *broker.Delivery) error {
			running <- struct{}{}
			hold.wait()
			return errors.New("boom")
		}}.handle,
		Failure: FailurePolicy{Backoff: fastRetry},
	}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "fail", false)
	recv(t, running)
	done := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: done})
	waitFor(t, "the session cancelled", func() bool { return s.has("cancel") })
	hold.open()
	waitClosed(t, done, "drain done")
	if a, c := s.index("nack 1 requeue"), s.index("close"); a < 0 || c < a {
		t.Errorf("want nack 1 requeue then close, got %v", s.log)
	}
}

// Redeliveries: one of a message already dead-lettered (its ack was lost)
// is acked without running the handler; one that a quorum queue counted
// past the x-delivery-count backstop is dead-lettered.
func TestConsumerRedeliveries(t *testing.T) {
	conn := &fakeConn{autoConfirm: true}
	var runs atomic.Int32
	r := newConsumer(t, &Route{
		Handle: func(context.Context, *broker.Delivery) error {
			runs.Add(1)
			return nil
		},
		Failure: FailurePolicy{MaxRedeliveries: 2, Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
	}, conn)
	s := r.sessions.await(t, 0)
	done := s.delivery(1, "done", true)
	r.state.setDeadLettered(messageKey(done), "2026-11-25T00:00:00Z") // the copy's stamp; done is the original
	s.cfg.Deliver(done)
	waitFor(t, "ack 1", func() bool { return s.has("ack 1") })
	if conn.publishes() != 0 {
		t.Errorf("an already dead-lettered message was dead-lettered again")
	}
	counted := s.delivery(2, "counted", true)
	counted.Headers = amqp.Table{"x-delivery-count": int64(101)}
	s.cfg.Deliver(counted)
	waitFor(t, "ack 2", func() bool { return s.has("ack 2") })
	if reason, _ := conn.publish(t, 0).Msg.Headers[HeaderReason].(string); reason != "poison message: delivered 101 times (backstop 100, 0 channels lost)" {
		t.Errorf("reason = %q", reason)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

// A route's handler goroutines go once it idles and come back with the
// next delivery; a route that keeps working keeps them.
func TestConsumerWorkersGoWhenTheRouteIdles(t *testing.T) {
	workers := func() int {
		var b strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
		return strings.Count(b.String(), "actors.(*workers).run(")
	}
	// Handler goroutines of earlier tests' routes (the simulation's) go
	// within their WorkerIdle; counting while they go would miscount ours.
	// They go within two WorkerIdle periods (DefaultWorkerIdle at most).
	for deadline := time.Now().Add(3 * DefaultWorkerIdle); workers() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d handler goroutines of earlier tests still run", workers())
		}
	}
	before := 0
	r := newConsumer(t, &Route{Handle: handlers{}.handle, Concurrency: 3, WorkerIdle: 250 * time.Millisecond}, &fakeConn{})
	s := r.sessions.await(t, 0)
	if n := workers() - before; n != 0 {
		t.Fatalf("%d handler goroutines before the first delivery, want 0", n)
	}
	s.deliver(1, "a", false)
	waitFor(t, "ack 1", func() bool { return s.has("ack 1") })
	if n := workers() - before; n != 3 {
		t.Fatalf("%d handler goroutines after a delivery, want Concurrency (3)", n)
	}
	waitFor(t, "the idle route's handler goroutines to go", func() bool { return workers() == before })
	s.deliver(2, "b", false)
	waitFor(t, "ack 2", func() bool { return s.has("ack 2") })
	// Busy, it keeps them: a delivery every 10 ms for 2 WorkerIdle periods.
	for tag := uint64(3); tag < 53; tag++ {
		s.deliver(tag, "c", false)
		if n := workers() - before; n != 3 {
			t.Fatalf("%d handler goroutines while the route works, want 3", n)
		}
		time.Sleep(10 * time.Millisecond) // the pace of the traffic, not a wait for a result
	}
	waitFor(t, "every delivery acked", func() bool { return s.has("ack 52") })
	waitFor(t, "the handler goroutines to go again", func() bool { return workers() == before })
}

package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hato-go/hato/broker"
)

func TestBreakerStateMachine(t *testing.T) {
	b := newBreaker(&BreakerPolicy{MinRuns: 4, FailureRatio: 0.5, Cooldown: time.Second, MaxCooldown: 3 * time.Second, Trials: 2})
	now := time.Unix(1000, 0)
	// Below MinRuns nothing trips, however many fail.
	for i := range 3 {
		if trip, _ := b.record(now, true); trip {
			t.Fatalf("tripped after %d runs, MinRuns is 4", i+1)
		}
	}
	if trip, _ := b.record(now, false); !trip {
		t.Fatal("3 of 4 failed: want a trip")
	}
	if d := b.open(now, 0); d != time.Second || b.state != BreakerOpen {
		t.Fatalf("open: cooldown %s state %s", d, b.state)
	}
	// Half-open: a failed trial opens again with a doubled, capped cooldown.
	b.state = BreakerHalfOpen
	if trip, _ := b.record(now, true); !trip {
		t.Fatal("a failed trial must trip")
	}
	if d := b.open(now, 0); d != 2*time.Second {
		t.Fatalf("second cooldown %s, want 2s", d)
	}
	b.state = BreakerHalfOpen
	b.open(now, 0)
	b.state = BreakerHalfOpen
	if d := b.open(now, 0); d != 3*time.Second {
		t.Fatalf("cooldown %s, want the 3s cap", d)
	}
	b.state = BreakerHalfOpen
	if _, resume := b.record(now, false); resume {
		t.Fatal("resumed after one of two trials")
	}
	if _, resume := b.record(now, false); !resume {
		t.Fatal("two trials succeeded: want resume")
	}
	if paused := b.close(now.Add(5 * time.Second)); paused != 5*time.Second {
		t.Errorf("paused %s, want 5s", paused)
	}
	if b.cooldown != time.Second {
		t.Errorf("cooldown %s after closing, want the base again", b.cooldown)
	}
	// Old runs leave the window.
	for range 3 {
		b.record(now, true)
	}
	if trip, _ := b.record(now.Add(11*time.Second), true); trip {
		t.Error("runs older than the window counted")
	}
}

func TestBreakerWithoutPolicyOnlyPauses(t *testing.T) {
	b := newBreaker(nil)
	for range 100 {
		if trip, _ := b.record(time.Now(), true); trip {
			t.Fatal("a route without a BreakerPolicy tripped on failures")
		}
	}
}

func TestBreakerDefaultCounts(t *testing.T) {
	p := BreakerPolicy{}.WithDefaults()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("db down"), true},
		{&Directive{Action: DeadLetter, Err: errors.New("bad")}, false},
		{&Directive{Action: Drop}, false},
		{&Directive{Action: Requeue}, false},
		{&Directive{Action: Retry}, true},
	} {
		if got := p.Counts(c.err); got != c.want {
			t.Errorf("Counts(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A handler in flight when the breaker trips finishes and is acked on the
// cancelled session; the session is closed only after that.
func TestConsumerBreakerLetsInFlightFinish(t *testing.T) {
	conn := &fakeConn{}
	slow := newGate(t)
	started := make(chan struct{})
	fail := func(context.Context, *broker.Delivery) error { return errors.New("down") }
	r := newConsumer(t, &Route{
		Handle: handlers{"a": fail, "b": fail, "c": fail, "slow": func(context.Context, *broker.Delivery) error {
			close(started)
			slow.wait()
			return nil
		}}.handle,
		Concurrency: 4,
		Failure:     FailurePolicy{MaxAttempts: 5, DeadLetterQueue: "q.dlq", Backoff: fastRetry}.WithDefaults(),
		Breaker:     &BreakerPolicy{MinRuns: 3, FailureRatio: 1, Cooldown: time.Hour},
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "slow", false)
	<-started
	s.deliver(2, "a", false)
	s.deliver(3, "b", false)
	s.deliver(4, "c", false)
	waitFor(t, "the trip", func() bool { return s.has("cancel") })
	if s.isEnded() {
		t.Fatal("session closed while a handler was in flight")
	}
	slow.open()
	waitFor(t, "the in-flight delivery acked, then the session closed", func() bool { return s.isEnded() })
	if !s.has("ack 1") || s.index("ack 1") > s.index("close") {
		t.Errorf("log %v: want ack 1 before close", s.log)
	}
}

package actors

import (
	"errors"
	"testing"
	"time"
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

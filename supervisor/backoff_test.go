package supervisor

import (
	"testing"
	"time"
)

func TestBackoffGrowsAndCaps(t *testing.T) {
	b := Backoff{Initial: 10 * time.Millisecond, Max: 80 * time.Millisecond, Multiplier: 2, Jitter: -1}
	want := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, w := range want {
		if got := b.Delay(i + 1); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	if got := b.Delay(0); got != 10*time.Millisecond {
		t.Errorf("Delay(0) = %s, want the first delay", got)
	}
	if got := b.Delay(1 << 30); got != 80*time.Millisecond {
		t.Errorf("huge attempt: %s, want the cap", got)
	}
}

func TestBackoffJitterStaysInBounds(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		d := b.Delay(3) // 400 ms ± 50 %
		if d < 200*time.Millisecond || d > 600*time.Millisecond {
			t.Fatalf("Delay(3) = %s outside [200ms, 600ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("jitter produced only %d distinct delays", len(seen))
	}
}

func TestBackoffZeroValueUsesDefaults(t *testing.T) {
	var b Backoff
	d := b.Delay(1)
	lo := time.Duration(float64(DefaultBackoff.Initial) * (1 - DefaultBackoff.Jitter))
	hi := time.Duration(float64(DefaultBackoff.Initial) * (1 + DefaultBackoff.Jitter))
	if d < lo || d > hi {
		t.Errorf("zero Backoff Delay(1) = %s, want within [%s, %s]", d, lo, hi)
	}
	if d := b.Delay(100); d > time.Duration(float64(DefaultBackoff.Max)*(1+DefaultBackoff.Jitter)) {
		t.Errorf("zero Backoff not capped: %s", d)
	}
}

func TestRestartsBudgetAndQuietReset(t *testing.T) {
	p := Policy{
		Backoff:     Backoff{Initial: time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: -1},
		ResetAfter:  time.Minute,
		MaxRestarts: 3,
		Window:      10 * time.Minute,
	}.withDefaults()
	r := restarts{policy: p}
	now := time.Unix(1000, 0)
	for i, want := range []time.Duration{1, 2, 4} {
		d, streak, ok := r.fail(now.Add(time.Duration(i) * time.Second))
		if !ok || d != want*time.Millisecond || streak != i+1 {
			t.Fatalf("failure %d: delay=%s streak=%d ok=%v", i+1, d, streak, ok)
		}
	}
	if _, _, ok := r.fail(now.Add(3 * time.Second)); ok {
		t.Fatal("fourth restart within the window must exhaust a budget of 3")
	}

	// A quiet period resets the backoff; the window forgets old restarts.
	r = restarts{policy: p}
	r.fail(now)
	r.fail(now.Add(time.Second))
	d, streak, ok := r.fail(now.Add(2 * time.Minute))
	if !ok || streak != 1 || d != time.Millisecond {
		t.Fatalf("after a quiet period: delay=%s streak=%d ok=%v, want 1ms, 1, true", d, streak, ok)
	}
	r = restarts{policy: p}
	for i := 0; i < 3; i++ {
		r.fail(now.Add(time.Duration(i) * time.Second))
	}
	if _, _, ok := r.fail(now.Add(11 * time.Minute)); !ok {
		t.Fatal("restarts outside the window must not count against the budget")
	}
}

func TestUnlimitedBudget(t *testing.T) {
	r := restarts{policy: Policy{MaxRestarts: -1}.withDefaults()}
	now := time.Now()
	for i := 0; i < 1000; i++ {
		if _, _, ok := r.fail(now); !ok {
			t.Fatalf("unlimited budget exhausted at %d", i)
		}
	}
}

package supervisor

import (
	"time"
)

// Policy says how a supervised child is restarted.
//
// After a failure the child restarts after Backoff.Delay(n), where n counts
// the failures since the child last ran quietly for ResetAfter. A child that
// needs more than MaxRestarts restarts within Window has exhausted its budget:
// it is stopped and an EventGaveUp is reported; it never dies silently.
// Package hato exports it as hato.RestartPolicy.
type Policy struct {
	// Backoff paces the restarts. Zero means 100 ms doubling to 30 s with
	// 20 % jitter (DefaultBackoff).
	Backoff Backoff
	// ResetAfter is the quiet period after which the failure count (and so
	// the backoff) starts again from one. Zero means 30 s.
	ResetAfter time.Duration
	// MaxRestarts is the restart budget within Window. Zero means 10;
	// negative means unlimited.
	MaxRestarts int
	// Window is the period MaxRestarts is counted over. Zero means 1 min.
	Window time.Duration
}

// DefaultPolicy is what a zero Policy means.
var DefaultPolicy = Policy{Backoff: DefaultBackoff, ResetAfter: 30 * time.Second, MaxRestarts: 10, Window: time.Minute}

func (p Policy) withDefaults() Policy {
	p.Backoff = p.Backoff.withDefaults()
	if p.ResetAfter <= 0 {
		p.ResetAfter = DefaultPolicy.ResetAfter
	}
	if p.MaxRestarts == 0 {
		p.MaxRestarts = DefaultPolicy.MaxRestarts
	}
	if p.Window <= 0 {
		p.Window = DefaultPolicy.Window
	}
	return p
}

// restarts tracks one child's failures for its Policy. Not safe for
// concurrent use: the root supervisor's mailbox owns it.
type restarts struct {
	policy   Policy
	times    []time.Time // restarts within the window
	streak   int         // failures since the last quiet period
	lastFail time.Time
}

// fail records a failure at now. It returns the delay before the restart and
// the streak count, or ok=false when the budget is exhausted.
func (r *restarts) fail(now time.Time) (delay time.Duration, streak int, ok bool) {
	p := r.policy
	if !r.lastFail.IsZero() && now.Sub(r.lastFail) >= p.ResetAfter {
		r.streak = 0
	}
	r.lastFail = now
	r.streak++
	kept := r.times[:0]
	for _, t := range r.times {
		if now.Sub(t) < p.Window {
			kept = append(kept, t)
		}
	}
	r.times = append(kept, now)
	if p.MaxRestarts >= 0 && len(r.times) > p.MaxRestarts {
		return 0, r.streak, false
	}
	return p.Backoff.Delay(r.streak), r.streak, true
}

package actors

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hato-go/hato/broker"
)

// liveSession is a session whose liveness the test sets.
type liveSession struct{ dead bool }

func (*liveSession) Cancel()       {}
func (*liveSession) Close()        {}
func (s *liveSession) Alive() bool { return !s.dead }

// testWatchdog is a watchdog without a broker (no checker channel, no
// actors to tell) and n consuming routes on live sessions.
func testWatchdog(n, checks int) (*Watchdog, []*liveSession) {
	w := NewWatchdog(LivenessConfig{Interval: time.Second, StallAfter: 5 * time.Second, ChecksPerInterval: checks})
	w.none = true
	sessions := make([]*liveSession, n)
	for i := range n {
		r := w.Route(fmt.Sprintf("r%d", i), broker.Topology{Queue: fmt.Sprintf("q%d", i)})
		sessions[i] = &liveSession{}
		r.view.Store(&liveView{inc: 1, gen: 1, s: sessions[i]})
	}
	return w, sessions
}

func stuckRoutes(w *Watchdog) map[string]Stuck {
	out := map[string]Stuck{}
	for _, s := range w.Stuck() {
		out[s.Route] = s
	}
	return out
}

// A dead session is acted on only when a second look finds it still dead
// on the same session with no progress; progress clears the mark.
func TestWatchdogConfirmsOnASecondLook(t *testing.T) {
	w, sessions := testWatchdog(2, 10)
	t0 := time.Now()
	w.look(t0)
	sessions[0].dead = true
	w.look(t0.Add(time.Second))
	if len(w.Stuck()) != 0 {
		t.Fatalf("stuck after one look: %v", w.Stuck())
	}
	w.look(t0.Add(2 * time.Second))
	st := stuckRoutes(w)
	if s, ok := st["r0"]; !ok || !errors.Is(s.Cause, ErrStalled) || len(st) != 1 {
		t.Fatalf("stuck %v, want r0 stalled only", st)
	}
	// A new session is not progress yet: the mark stays until deliveries
	// arrive or a check passes.
	sessions[0] = &liveSession{}
	w.routes[0].view.Store(&liveView{inc: 1, gen: 2, s: sessions[0]})
	w.look(t0.Add(3 * time.Second))
	if _, ok := stuckRoutes(w)["r0"]; !ok {
		t.Fatal("a new session cleared the stuck mark before any progress")
	}
	w.routes[0].arrivals.Add(1)
	w.look(t0.Add(4 * time.Second))
	if len(w.Stuck()) != 0 {
		t.Fatalf("still stuck after an arrival: %v", w.Stuck())
	}
}

// A suspicion on one session is not confirmed on the next: the session
// generation moved on (the actor reopened meanwhile).
func TestWatchdogSuspicionIsPerSession(t *testing.T) {
	w, sessions := testWatchdog(1, 10)
	t0 := time.Now()
	w.look(t0)
	sessions[0].dead = true
	w.look(t0.Add(time.Second))
	dead := &liveSession{dead: true}
	w.routes[0].view.Store(&liveView{inc: 1, gen: 2, s: dead})
	w.look(t0.Add(2 * time.Second)) // progress: new generation
	w.look(t0.Add(3 * time.Second)) // first look at the new session
	if len(w.Stuck()) != 0 {
		t.Fatalf("stuck without two looks at one session: %v", w.Stuck())
	}
	w.look(t0.Add(4 * time.Second))
	if len(w.Stuck()) != 1 {
		t.Fatalf("not stuck after two looks at a dead session")
	}
}

// Failing dead-lettering marks the route stuck at once; it is unhealthy
// past the threshold, and clears when a copy goes through.
func TestWatchdogDeadLetterFailing(t *testing.T) {
	w, _ := testWatchdog(1, 10)
	r := w.routes[0]
	if !r.refuse(errors.New("403")) || r.refuse(errors.New("403 again")) {
		t.Fatal("refuse must report only the first failure of a run")
	}
	r.refused.Load().since = time.Now().Add(-2 * DefaultUnhealthyAfter)
	w.look(time.Now())
	s, ok := stuckRoutes(w)["r0"]
	if !ok || !errors.Is(s.Cause, ErrDeadLetterFailing) || !s.Unhealthy {
		t.Fatalf("stuck %+v, want r0 dead-letter failing and unhealthy", s)
	}
	if !r.unrefuse() {
		t.Fatal("unrefuse found no record")
	}
	r.arrivals.Add(1)
	w.look(time.Now())
	if len(w.Stuck()) != 0 {
		t.Fatalf("still stuck: %v", w.Stuck())
	}
}

// Queue checks are bounded per look and taken in turns: with a budget of
// 2, five idle routes are checked 2, 2, then 1 (+1 from the start).
func TestWatchdogChecksInTurns(t *testing.T) {
	w, _ := testWatchdog(5, 2)
	t0 := time.Now()
	w.look(t0) // first sight: all idle from t0
	at := t0.Add(10 * time.Second)
	var order []string
	for range 3 {
		before := map[*RouteLiveness]time.Time{}
		for _, r := range w.routes {
			before[r] = r.w.idleSince
		}
		w.look(at)
		for _, r := range w.routes {
			if !r.w.idleSince.Equal(before[r]) {
				order = append(order, r.name)
			}
		}
		at = at.Add(10 * time.Second)
	}
	if got := fmt.Sprint(order); got != "[r0 r1 r2 r3 r0 r4]" {
		t.Errorf("checked %s, want [r0 r1 r2 r3 r0 r4]", got)
	}
}

// BenchmarkWatchdogLook10k is one look over 10 000 routes, all idle and
// due for a check: the first pass plus a budget of 200 checks (without a
// broker, so it measures the watchdog's own cost).
func BenchmarkWatchdogLook10k(b *testing.B) {
	w, _ := testWatchdog(10000, DefaultChecksPerInterval)
	now := time.Now()
	w.look(now)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		now = now.Add(time.Minute)
		w.look(now)
	}
}

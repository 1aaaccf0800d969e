package conformance

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

// breakerPauses: a route whose handler fails everything pauses (EventPaused,
// PausedRoutes) instead of dead-lettering; once the dependency is back the
// trial succeeds, the route resumes and handles every message; few, if
// any, were dead-lettered. A handler's Pause pauses it too.
func breakerPauses(t *testing.T, s *suite) {
	var down atomic.Bool
	down.Store(true)
	var paused, resumed atomic.Int32
	var dead atomic.Int64
	rec := newRecord()
	svc := s.service(t, "conf-breaker", fast(hato.FailurePolicy{MaxAttempts: 2}),
		hato.WithDeliveryEvents(func(e hato.DeliveryEvent) {
			if e.Action == hato.ActionDeadLetter {
				dead.Add(1)
			}
		}),
		hato.WithSupervisorEvents(func(e hato.SupervisorEvent) {
			switch e.Kind {
			case hato.EventPaused:
				paused.Add(1)
			case hato.EventResumed:
				resumed.Add(1)
			}
		}),
		hato.Breaker(hato.BreakerPolicy{MinRuns: 4, Cooldown: 100 * time.Millisecond, MaxCooldown: 400 * time.Millisecond}))
	subscribe(t, svc, "breaker", func(_ context.Context, m *hato.Message[item]) error {
		if m.Data.ID == "pause" && rec.count("pause") == 0 {
			rec.add("pause", "")
			return hato.Pause(errors.New("503"), 50*time.Millisecond)
		}
		if down.Load() {
			return errors.New("dependency down")
		}
		rec.add("ok", m.Data.ID)
		return nil
	}, hato.Concurrency(4))
	start(t, svc)
	p := s.publisher(t)
	const n = 40
	for i := range n {
		publish(t, p, "breaker", item{ID: fmt.Sprint(i)})
	}
	waitFor(t, "the route to pause", func() bool { return len(svc.PausedRoutes()) == 1 })
	if err := svc.Ready(); err != nil {
		t.Errorf("paused route not ready: %v", err)
	}
	down.Store(false)
	waitFor(t, "every message handled", func() bool { return int64(distinct(rec.get("ok"))) >= n-dead.Load() })
	waitFor(t, "the route to resume", func() bool { return resumed.Load() > 0 && len(svc.PausedRoutes()) == 0 })
	before := paused.Load()
	publish(t, p, "breaker", item{ID: "pause"})
	waitFor(t, "Pause to pause the route and the message to be handled", func() bool {
		return paused.Load() > before && contains(rec.get("ok"), "pause")
	})
	if dl := dead.Load(); dl > 8 {
		t.Errorf("%d dead-lettered: the breaker should have paused after 4 runs", dl)
	}
}

func contains(v []string, s string) bool {
	for _, x := range v {
		if x == s {
			return true
		}
	}
	return false
}

// retryDelays: a message whose first delivery fails comes back through
// its delay queue with Message.Retry 1 and its routing key; one that
// always fails is dead-lettered after the last delay, with x-hato-retry
// and the retry history.
func retryDelays(t *testing.T, s *suite) {
	rec := newRecord()
	svc := s.service(t, "conf-delay", fast(hato.FailurePolicy{RetryDelays: []time.Duration{200 * time.Millisecond, 300 * time.Millisecond}}))
	subscribe(t, svc, "delay.*", func(_ context.Context, m *hato.Message[item]) error {
		rec.add(m.Data.ID, fmt.Sprintf("%d %s", m.Retry, m.DeliveredRoutingKey))
		if m.Data.ID == "always" || m.Retry == 0 {
			return errors.New("fails")
		}
		return nil
	})
	start(t, svc)
	p := s.publisher(t)
	publish(t, p, "delay.a", item{ID: "once"})
	publish(t, p, "delay.b", item{ID: "always"})
	msgs := s.env.DeadLetters(t, svc.Routes()[0].DeadLetterQueue, 1)
	h := msgs[0].Headers
	if h["x-hato-retry"] != int64(2) {
		t.Errorf("x-hato-retry = %v (%T), want 2", h["x-hato-retry"], h["x-hato-retry"])
	}
	if hist, _ := h["x-hato-retry-history"].([]any); len(hist) != 2 {
		t.Errorf("x-hato-retry-history = %v, want 2 entries", h["x-hato-retry-history"])
	}
	if got, _ := h["x-hato-original-routing-key"].(string); got != s.prefix+"delay.b" {
		t.Errorf("x-hato-original-routing-key = %q, want %q", got, s.prefix+"delay.b")
	}
	waitFor(t, "the retried message", func() bool { return rec.count("once") == 2 })
	if got := sorted(rec.get("once")); got != "0 delay.a 1 delay.a" {
		t.Errorf("runs of once: %q, want the first delivery and one delayed retry, routing key kept", got)
	}
	if got := sorted(rec.get("always")); got != "0 delay.b 1 delay.b 2 delay.b" {
		t.Errorf("runs of always: %q, want three deliveries, one attempt each", got)
	}
}

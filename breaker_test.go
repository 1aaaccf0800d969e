package hato_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/hatotest"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// TestBreakerPausesInsteadOfDeadLettering: on the in-memory broker, a
// route whose handler fails everything pauses (EventPaused, PausedRoutes)
// after a few failures, keeps the rest of the messages in the queue, and
// handles every one once the dependency is back (EventResumed).
func TestBreakerPausesInsteadOfDeadLettering(t *testing.T) {
	b := hatotest.NewBroker()
	events := &testutil.SupervisorEvents{}
	svc, err := hato.New("svc", hatotest.Transport(b), hato.WithSupervisorEvents(events.Add),
		hato.Breaker(hato.BreakerPolicy{MinRuns: 5, Cooldown: 50 * time.Millisecond, MaxCooldown: 200 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	var down atomic.Bool
	down.Store(true)
	got := testutil.NewCollector()
	_ = hato.Subscribe(svc, "in", func(ctx context.Context, m *hato.Message[bpayload]) error {
		if down.Load() {
			return errors.New("database down")
		}
		got.Add(m.Data.ID)
		return nil
	}, hato.Concurrency(4))
	hatotest.Start(t, svc)
	ids := testutil.IDs("m", 100)
	for _, id := range ids {
		if err := b.Publish(context.Background(), "in", bpayload{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.WaitFor(t, 5*time.Second, func() bool { return len(svc.PausedRoutes()) == 1 }, "the route to pause")
	if p := svc.PausedRoutes()[0]; p.Cause == "" || p.Route != svc.Routes()[0].Name {
		t.Errorf("paused %+v: want the route with its cause", p)
	}
	if svc.Ready() != nil {
		t.Errorf("a paused route is ready: %v", svc.Ready())
	}
	down.Store(false)
	got.WaitDistinct(t, len(ids), 10*time.Second)
	brokertest.WaitFor(t, 5*time.Second, func() bool { return events.Count(hato.EventResumed) > 0 }, "EventResumed")
	if n := events.Count(hato.EventPaused); n == 0 {
		t.Error("no EventPaused")
	}
	if len(svc.PausedRoutes()) != 0 {
		t.Errorf("still paused: %+v", svc.PausedRoutes())
	}
	if dl := b.DeadLettered(svc.Routes()[0].DeadLetterQueue); len(dl) > 10 {
		t.Errorf("%d messages dead-lettered; the breaker should have paused after a few", len(dl))
	}
}

// TestPauseDirectivePausesTheRoute: without a Breaker option, a handler's
// Pause pauses the route at once; the message goes back uncounted (it is
// handled, not dead-lettered, although MaxAttempts is 1).
func TestPauseDirectivePausesTheRoute(t *testing.T) {
	b := hatotest.NewBroker()
	events := &testutil.SupervisorEvents{}
	svc, err := hato.New("svc", hatotest.Transport(b), hato.WithSupervisorEvents(events.Add),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	got := testutil.NewCollector()
	_ = hato.Subscribe(svc, "in", func(ctx context.Context, m *hato.Message[bpayload]) error {
		if calls.Add(1) == 1 {
			return hato.Pause(errors.New("503 from the payment API"), 100*time.Millisecond)
		}
		got.Add(m.Data.ID)
		return nil
	})
	hatotest.Start(t, svc)
	ids := testutil.IDs("p", 5)
	for _, id := range ids {
		_ = b.Publish(context.Background(), "in", bpayload{ID: id})
	}
	got.WaitDistinct(t, len(ids), 10*time.Second)
	brokertest.WaitFor(t, 5*time.Second, func() bool { return events.Count(hato.EventResumed) == 1 }, "EventResumed")
	if events.Count(hato.EventPaused) != 1 {
		t.Errorf("%d EventPaused, want 1", events.Count(hato.EventPaused))
	}
	if dl := b.DeadLettered(svc.Routes()[0].DeadLetterQueue); len(dl) != 0 {
		t.Errorf("%d dead-lettered, want none", len(dl))
	}
}

type bpayload struct {
	ID string `json:"id"`
}

// TestPausedRouteStopsAndReadyzNamesIt: /readyz stays 200 while a route is
// paused and names it; a paused service stops at once (no session to
// drain) and the message stays in its queue.
func TestPausedRouteStopsAndReadyzNamesIt(t *testing.T) {
	b := hatotest.NewBroker()
	svc, err := hato.New("svc", hatotest.Transport(b))
	if err != nil {
		t.Fatal(err)
	}
	_ = hato.Subscribe(svc, "in", func(ctx context.Context, m *hato.Message[bpayload]) error {
		return hato.Pause(errors.New("payment API answers 503"), time.Hour)
	})
	hatotest.Start(t, svc)
	_ = b.Publish(context.Background(), "in", bpayload{ID: "x"})
	brokertest.WaitFor(t, 5*time.Second, func() bool { return len(svc.PausedRoutes()) == 1 }, "the route to pause")
	rec := httptest.NewRecorder()
	svc.OpsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var body struct {
		Status string `json:"status"`
		Paused []struct {
			Route, State, Cause string
		} `json:"paused"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK || body.Status != "ok" ||
		len(body.Paused) != 1 || body.Paused[0].State != "open" || !strings.Contains(body.Paused[0].Cause, "503") {
		t.Errorf("/readyz %d %s (%v)", rec.Code, rec.Body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := svc.Status(ctx); err != nil || len(st.Paused) != 1 {
		t.Errorf("Status %+v, %v: want the paused route", st, err)
	}
	if err := svc.Stop(ctx); err != nil {
		t.Fatalf("stop while paused: %v", err)
	}
	if q := b.Queue(svc.Routes()[0].Queue); len(q) != 1 {
		t.Errorf("queue holds %d messages after the stop, want the paused one", len(q))
	}
}

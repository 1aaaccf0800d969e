package hato

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
)

// BreakerPolicy says when a route's circuit breaker pauses the route (see
// Breaker). Zero fields take the defaults.
//
// Closed, the route consumes normally and counts its handler runs over a
// sliding Window. Once the window holds at least MinRuns runs of which at
// least FailureRatio failed, the breaker opens: the route stops taking
// deliveries (basic.cancel), lets the handlers in flight finish, and
// returns the messages waiting for an in-process retry to the queue
// without counting the attempt. After Cooldown it is half-open: it
// consumes again with a prefetch of Trials and closes once Trials runs in
// a row succeed; a failure opens it again for twice the cooldown, up to
// MaxCooldown.
//
// The defaults: FailureRatio 0.5 (in (0, 1]), MinRuns 10, Window 10 s,
// Cooldown 5 s, MaxCooldown 1 min, Trials 3. Counts says whether a
// handler's error counts as a failure; nil means plain errors (and
// timeouts, and failed publishes) count, while DeadLetter, Drop and
// Requeue decisions and undecodable messages do not (they say nothing
// about the dependency).
type BreakerPolicy = actors.BreakerPolicy

// BreakerOption is the option Breaker returns. It implements Option and
// RouteOption.
type BreakerOption struct{ p BreakerPolicy }

// Breaker gives a route (or, as a service option, every route) a circuit
// breaker that pauses it while its handler keeps failing, so that the
// messages wait in the queue during an outage of a dependency instead of
// flooding the dead-letter queue. See BreakerPolicy and
// docs/outage-handling.md.
func Breaker(p BreakerPolicy) BreakerOption { return BreakerOption{p} }

func (o BreakerOption) applyService(c *config) error {
	p := o.p
	c.breaker = &p
	return nil
}

func (o BreakerOption) applyRoute(r *routeConfig) error {
	p := o.p
	r.breaker = &p
	return nil
}

var _ interface {
	Option
	RouteOption
} = BreakerOption{}

// Pause returns an error that pauses the handler's route at once, for d
// (the route's BreakerPolicy.Cooldown, or 5 s without one, when zero):
// for a handler that learns its dependency is down (a 503, a refused
// connection). The message goes back to its queue, not counted as a
// failed attempt; the route then goes half-open as after a tripped
// breaker. It works with or without Breaker.
func Pause(err error, d time.Duration) error {
	return &actors.PauseDirective{Err: err, For: d}
}

// PausedRoute is a route whose circuit breaker is open or half-open (see
// Service.PausedRoutes): its Route name (RouteInfo.Name), State ("open" or
// "half-open"), Since (when it paused), Cause (the handler error that
// tripped the breaker) and Cooldown (the current pause before the next
// trial).
type PausedRoute = actors.PausedRoute

// pauseBook follows the routes' breakers for Service.PausedRoutes,
// /readyz and the metrics. The consumer actors write it through their
// BreakerEvents (a mutex held briefly, never blocking them).
type pauseBook struct {
	mu     sync.Mutex
	routes map[string]*pauseEntry
}

type pauseEntry struct {
	state  actors.BreakerState
	paused PausedRoute
	total  time.Duration // paused before the current pause
}

func newPauseBook() *pauseBook { return &pauseBook{routes: map[string]*pauseEntry{}} }

func (b *pauseBook) event(e actors.BreakerEvent) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	en := b.routes[e.Route]
	if en == nil {
		en = &pauseEntry{}
		b.routes[e.Route] = en
	}
	switch e.State {
	case actors.BreakerOpen:
		if en.state == actors.BreakerClosed {
			en.paused = PausedRoute{Route: e.Route, Since: now}
		}
		en.paused.Cooldown = e.Cooldown
		if e.Cause != nil {
			en.paused.Cause = e.Cause.Error()
		}
	case actors.BreakerClosed:
		en.total += e.Paused
	}
	en.state = e.State
	en.paused.State = e.State.String()
}

// paused lists the routes not closed, by name.
func (b *pauseBook) paused() []PausedRoute {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []PausedRoute
	for _, en := range b.routes {
		if en.state != actors.BreakerClosed {
			out = append(out, en.paused)
		}
	}
	slices.SortFunc(out, func(a, b PausedRoute) int {
		if a.Route < b.Route {
			return -1
		}
		if a.Route > b.Route {
			return 1
		}
		return 0
	})
	return out
}

// observe registers the breaker gauges on m: hato.route.breaker.state
// (0 closed, 1 open, 2 half-open) and hato.route.paused.time (seconds
// paused, cumulative), per route that ever paused.
func (b *pauseBook) observe(m metric.Meter) error {
	state, err := m.Int64ObservableGauge("hato.route.breaker.state",
		metric.WithDescription("State of the route's circuit breaker: 0 closed, 1 open (paused), 2 half-open"))
	if err != nil {
		return err
	}
	paused, err := m.Float64ObservableCounter("hato.route.paused.time", metric.WithUnit("s"),
		metric.WithDescription("Time the route spent paused by its circuit breaker"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := time.Now()
		b.mu.Lock()
		defer b.mu.Unlock()
		for name, en := range b.routes {
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("hato.route", name)))
			total := en.total
			if en.state != actors.BreakerClosed {
				total += now.Sub(en.paused.Since)
			}
			o.ObserveInt64(state, int64(en.state), attrs)
			o.ObserveFloat64(paused, total.Seconds(), attrs)
		}
		return nil
	}, state, paused)
	return err
}

// PausedRoutes lists the routes whose circuit breaker is open or
// half-open, by name: paused during an outage of their dependency. A
// paused route is healthy and ready (see Ready); /readyz names it.
func (s *Service) PausedRoutes() []PausedRoute { return s.cfg.pauses.paused() }

// breakerOf is r's breaker policy: the route's, else the service's, else
// none.
func (s *Service) breakerOf(r *route) *actors.BreakerPolicy {
	p := s.cfg.breaker
	if r.cfg.breaker != nil {
		p = r.cfg.breaker
	}
	if p == nil {
		return nil
	}
	c := *p
	return &c
}

// writeReady is /readyz: writeProbe's answer, plus the paused routes (a
// paused route is ready: the answer stays 200).
func writeReady(w http.ResponseWriter, err error, paused []PausedRoute) {
	if err != nil || len(paused) == 0 {
		writeProbe(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	type route struct {
		Route    string    `json:"route"`
		State    string    `json:"state"`
		Since    time.Time `json:"since"`
		Cause    string    `json:"cause,omitempty"`
		Cooldown string    `json:"cooldown"`
	}
	body := struct {
		Status string  `json:"status"`
		Paused []route `json:"paused"`
	}{Status: "ok"}
	for _, p := range paused {
		body.Paused = append(body.Paused, route{p.Route, p.State, p.Since, broker.Redact(p.Cause), p.Cooldown.String()})
	}
	_ = json.NewEncoder(w).Encode(body)
}

package hato

import (
	"errors"
	"fmt"
	"time"

	"github.com/hato-go/hato/actors"
)

// Liveness: a route that cannot make progress says so, whatever the cause
// (see DESIGN.md, "Liveness"). A watchdog looks at every route each
// liveness interval; a route found stuck has its channel reopened, is
// reported as EventUnavailable with an error wrapping ErrRouteStalled (or
// ErrDeadLetterFailing), is counted in hato.route.stalls, makes Ready fail
// naming it and the cause, and makes Healthy fail once it stayed stuck
// for the unhealthy threshold.

// Liveness errors, wrapped by the Reason of a route's EventUnavailable and
// by Ready's and Healthy's errors.
var (
	// ErrRouteStalled: the route consumed nothing while it should have:
	// its channel died unnoticed, the broker no longer delivers to it, or
	// its queue holds ready messages that never arrive.
	ErrRouteStalled = actors.ErrStalled
	// ErrDeadLetterFailing: the broker refuses the route's dead-letter
	// copies (e.g. no write permission on the default exchange); the
	// message is held and retried.
	ErrDeadLetterFailing = actors.ErrDeadLetterFailing
)

// Liveness defaults (see the With… options below).
const (
	DefaultLivenessInterval = actors.DefaultLivenessInterval
	DefaultStallAfter       = actors.DefaultStallAfter
	DefaultUnhealthyAfter   = actors.DefaultUnhealthyAfter
	DefaultLivenessChecks   = actors.DefaultChecksPerInterval
)

// WithLivenessInterval sets how often the watchdog looks at every route
// (default 2 s). A route whose channel died unnoticed is reported within
// two intervals.
func WithLivenessInterval(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("liveness interval %s", d)
		}
		c.liveness.Interval = d
		return nil
	})
}

// WithStallAfter sets how long a route must have had nothing in flight
// and nothing arriving before the watchdog asks the broker whether its
// queue holds ready messages or has lost its consumer (default 5 s). Ready
// messages on two looks in a row, with nothing arriving, mean the route is
// stuck.
func WithStallAfter(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("stall threshold %s", d)
		}
		c.liveness.StallAfter = d
		return nil
	})
}

// WithUnhealthyAfter sets how long a route may stay stuck before Healthy
// (and /healthz) fails, so an orchestrator restarts the process (default
// 60 s).
func WithUnhealthyAfter(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("unhealthy threshold %s", d)
		}
		c.liveness.UnhealthyAfter = d
		return nil
	})
}

// WithLivenessChecks bounds how many queues the watchdog asks the broker
// about per interval (passive declares, one at a time on one channel;
// default 200). Only idle routes are asked; with more idle routes than
// this, they are asked in turns.
func WithLivenessChecks(n int) Option {
	return serviceOption(func(c *config) error {
		if n <= 0 {
			return invalid("liveness checks %d", n)
		}
		c.liveness.ChecksPerInterval = n
		return nil
	})
}

// newWatchdog makes the service's watchdog; spawn calls it before the
// routes' props are made.
func (s *Service) newWatchdog() {
	cfg := s.cfg.liveness
	cfg.Logger = s.log.Named("liveness")
	s.watchdog = actors.NewWatchdog(cfg)
}

// stuckRoute is the first stuck route as an error (nil if none); with
// unhealthyOnly, only one stuck past the unhealthy threshold.
func (s *Service) stuckRoute(unhealthyOnly bool) error {
	if s.watchdog == nil {
		return nil
	}
	for _, st := range s.watchdog.Stuck() {
		if unhealthyOnly && !st.Unhealthy {
			continue
		}
		return fmt.Errorf("route %s stuck since %s: %w", st.Route, st.Since.UTC().Format(time.RFC3339), st.Cause)
	}
	return nil
}

// stallReason classifies a route's unavailability for hato.route.stalls:
// "stalled", "dead_letter_failing", or "" (not a liveness failure).
func stallReason(err error) string {
	switch {
	case errors.Is(err, ErrRouteStalled):
		return "stalled"
	case errors.Is(err, ErrDeadLetterFailing):
		return "dead_letter_failing"
	}
	return ""
}

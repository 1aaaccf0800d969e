package hato

import (
	"github.com/hato-go/hato/supervisor"
)

// The supervision types are package supervisor's, exported here under the
// names hato's options and callbacks use (see DESIGN.md, "Types defined
// once").

// Backoff is a capped exponential backoff with jitter:
//
//	delay(n) = min(Max, Initial × Multiplier^(n-1)) × (1 ± Jitter)
//
// It paces reconnection (WithReconnectBackoff), in-process retries
// (FailurePolicy.Backoff) and route restarts (RestartPolicy.Backoff). Its
// fields: Initial is the first delay (zero means 100 ms); Max caps every
// delay (zero means 30 s); Multiplier grows the delay per attempt (zero
// means 2; otherwise at least 1); Jitter is the fraction of random spread
// around each delay, at most 1 (zero means 0.2; negative means none). A
// zero FailurePolicy.Backoff has a default of its own (see there). Delay(n)
// is the delay before attempt n.
type Backoff = supervisor.Backoff

// checkBackoff refuses values the defaults would silently replace:
// negative durations or multiplier, a jitter above 1, NaN, Max below
// Initial.
func checkBackoff(b Backoff) error {
	switch {
	case b.Initial < 0 || b.Max < 0:
		return invalid("backoff %s..%s: negative", b.Initial, b.Max)
	case b.Max > 0 && b.Initial > b.Max:
		return invalid("backoff initial %s above max %s", b.Initial, b.Max)
	case !(b.Multiplier >= 0) || (b.Multiplier > 0 && b.Multiplier < 1):
		return invalid("backoff multiplier %g: want 0 (default) or at least 1", b.Multiplier)
	case b.Jitter != b.Jitter || b.Jitter > 1:
		return invalid("backoff jitter %g: want at most 1 (negative: none)", b.Jitter)
	}
	return nil
}

// checkRestartPolicy refuses negative values (MaxRestarts < 0 means
// unlimited).
func checkRestartPolicy(p RestartPolicy) error {
	if p.ResetAfter < 0 || p.Window < 0 {
		return invalid("restart policy: negative ResetAfter %s or Window %s", p.ResetAfter, p.Window)
	}
	return checkBackoff(p.Backoff)
}

// RestartPolicy says how a crashed route actor is restarted (see
// Supervision). Zero fields take the defaults.
//
// After a crash the route restarts after Backoff's delay for the n-th
// failure, where n counts the failures since the route last ran quietly for
// ResetAfter (zero means 30 s). A route that needs more than MaxRestarts
// (zero means 10; negative means unlimited) restarts within Window (zero
// means 1 min) has exhausted its budget: it is stopped and an EventGaveUp
// is reported (and the service fails, unless
// WithKeepRunningOnRouteFailure). A zero Backoff means 100 ms doubling to
// 30 s with 20 % jitter.
type RestartPolicy = supervisor.Policy

// EventKind says what a SupervisorEvent reports.
type EventKind = supervisor.EventKind

// The kinds of SupervisorEvent.
const (
	// EventReady: the connection or route is connected and working, at
	// start and again after each reconnection or restart.
	EventReady = supervisor.EventReady
	// EventFailed: the connection or route crashed (its actor panicked); a
	// restart is scheduled after SupervisorEvent.Delay.
	EventFailed = supervisor.EventFailed
	// EventRestarted: it was restarted after a failure.
	EventRestarted = supervisor.EventRestarted
	// EventStopped: its actor stopped although the service did not stop it
	// (it was stopped or poisoned from outside); it is spawned again after
	// SupervisorEvent.Delay.
	EventStopped = supervisor.EventStopped
	// EventRespawned: a stopped actor was spawned again.
	EventRespawned = supervisor.EventRespawned
	// EventGaveUp: a route exhausted its restart budget, or the connection
	// or a route failed permanently (credentials or a queue declaration
	// refused). It stays stopped.
	EventGaveUp = supervisor.EventGaveUp
	// EventUnavailable: the connection or route lost its broker connection
	// or channel and is recovering by itself (an EventReady follows when it
	// has).
	EventUnavailable = supervisor.EventUnavailable
	// EventPaused: a route's circuit breaker opened (see Breaker, Pause):
	// it takes no deliveries until a trial after SupervisorEvent.Delay;
	// Reason is the failure that tripped it. The route stays ready.
	EventPaused = supervisor.EventPaused
	// EventResumed: a paused route's trials succeeded and it consumes
	// again; SupervisorEvent.Delay is how long it was paused.
	EventResumed = supervisor.EventResumed
)

// SupervisorEvent reports what happened to the service's connection or one
// of its routes (see WithSupervisorEvents): its Time, Kind, Child
// ("connection" or the route's name, RouteInfo.Name), Reason (why it
// failed, stopped or gave up), Failures (since it last ran quietly for
// RestartPolicy.ResetAfter), Delay (the backoff before the restart, or the
// pause) and Detail (for "connection", the broker node of each
// connection). Every event is logged too.
type SupervisorEvent = supervisor.Event

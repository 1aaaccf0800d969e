package hato

import (
	"fmt"
	"time"

	"github.com/hato-go/hato/supervisor"
)

// Backoff is a capped exponential backoff with jitter:
//
//	delay(n) = min(Max, Initial × Multiplier^(n-1)) × (1 ± Jitter)
//
// It paces reconnection (WithReconnectBackoff), in-process retries
// (FailurePolicy.Backoff) and route restarts (RestartPolicy.Backoff). Zero
// fields take the defaults below; a zero FailurePolicy.Backoff has a
// default of its own (see there).
type Backoff struct {
	// Initial is the first delay. Zero means 100 ms.
	Initial time.Duration
	// Max caps every delay. Zero means 30 s.
	Max time.Duration
	// Multiplier grows the delay per attempt. Zero means 2.
	Multiplier float64
	// Jitter is the fraction of random spread around each delay, in [0, 1].
	// Zero means 0.2; use a negative value for none.
	Jitter float64
}

// check refuses values the defaults would silently replace: negative
// durations or multiplier, a jitter above 1, NaN, Max below Initial.
func (b Backoff) check() error {
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

// check refuses negative values (MaxRestarts < 0 means unlimited).
func (p RestartPolicy) check() error {
	if p.ResetAfter < 0 || p.Window < 0 {
		return invalid("restart policy: negative ResetAfter %s or Window %s", p.ResetAfter, p.Window)
	}
	return p.Backoff.check()
}

// supervisorBackoff converts b for the supervisor and the actors.
func supervisorBackoff(b Backoff) supervisor.Backoff {
	return supervisor.Backoff{Initial: b.Initial, Max: b.Max, Multiplier: b.Multiplier, Jitter: b.Jitter}
}

// RestartPolicy says how a crashed route actor is restarted (see
// Supervision). Zero fields take the defaults.
//
// After a crash the route restarts after Backoff's delay for the n-th
// failure, where n counts the failures since the route last ran quietly for
// ResetAfter. A route that needs more than MaxRestarts restarts within
// Window has exhausted its budget: it is stopped and an EventGaveUp is
// reported (and the service fails, unless WithKeepRunningOnRouteFailure).
type RestartPolicy struct {
	// Backoff paces the restarts. Zero means 100 ms doubling to 30 s with
	// 20 % jitter.
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

// supervisorPolicy converts p for the root supervisor.
func supervisorPolicy(p RestartPolicy) supervisor.Policy {
	return supervisor.Policy{
		Backoff:     supervisorBackoff(p.Backoff),
		ResetAfter:  p.ResetAfter,
		MaxRestarts: p.MaxRestarts,
		Window:      p.Window,
	}
}

// EventKind says what a SupervisorEvent reports.
type EventKind int

const (
	// EventReady: the connection or route is connected and working, at
	// start and again after each reconnection or restart.
	EventReady EventKind = iota + 1
	// EventFailed: the connection or route crashed (its actor panicked); a
	// restart is scheduled after SupervisorEvent.Delay.
	EventFailed
	// EventRestarted: it was restarted after a failure.
	EventRestarted
	// EventStopped: its actor stopped although the service did not stop it
	// (it was stopped or poisoned from outside); it is spawned again after
	// SupervisorEvent.Delay.
	EventStopped
	// EventRespawned: a stopped actor was spawned again.
	EventRespawned
	// EventGaveUp: a route exhausted its restart budget, or the connection
	// or a route failed permanently (credentials or a queue declaration
	// refused). It stays stopped.
	EventGaveUp
	// EventUnavailable: the connection or route lost its broker connection
	// or channel and is recovering by itself (an EventReady follows when it
	// has).
	EventUnavailable
	// EventPaused: a route's circuit breaker opened (see Breaker, Pause):
	// it takes no deliveries until a trial after SupervisorEvent.Delay;
	// Reason is the failure that tripped it. The route stays ready.
	EventPaused
	// EventResumed: a paused route's trials succeeded and it consumes
	// again; SupervisorEvent.Delay is how long it was paused.
	EventResumed
)

func (k EventKind) String() string {
	switch k {
	case EventReady:
		return "ready"
	case EventFailed:
		return "failed"
	case EventRestarted:
		return "restarted"
	case EventStopped:
		return "stopped"
	case EventRespawned:
		return "respawned"
	case EventGaveUp:
		return "gave-up"
	case EventUnavailable:
		return "unavailable"
	case EventPaused:
		return "paused"
	case EventResumed:
		return "resumed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// eventKind converts the supervisor's event kind.
func eventKind(k supervisor.EventKind) EventKind {
	switch k {
	case supervisor.EventReady:
		return EventReady
	case supervisor.EventFailed:
		return EventFailed
	case supervisor.EventRestarted:
		return EventRestarted
	case supervisor.EventStopped:
		return EventStopped
	case supervisor.EventRespawned:
		return EventRespawned
	case supervisor.EventGaveUp:
		return EventGaveUp
	case supervisor.EventUnavailable:
		return EventUnavailable
	case supervisor.EventPaused:
		return EventPaused
	case supervisor.EventResumed:
		return EventResumed
	}
	return 0
}

// SupervisorEvent reports what happened to the service's connection or one
// of its routes (see WithSupervisorEvents). Every event is logged too.
type SupervisorEvent struct {
	// Time is when it happened.
	Time time.Time
	// Kind is what happened.
	Kind EventKind
	// Child is who it happened to: "connection" or the route's name
	// (RouteInfo.Name).
	Child string
	// Reason is why the actor failed, stopped or gave up (nil for
	// EventReady, EventRestarted, EventRespawned). A panic that was not an
	// error reads "panic: <value>".
	Reason error
	// Failures counts the failures since the actor last ran quietly for
	// RestartPolicy.ResetAfter.
	Failures int
	// Delay is the backoff before the restart (EventFailed, EventStopped).
	Delay time.Duration
	// Detail is where it happened, when the actor says: for "connection",
	// the broker node of each connection ("publish=host:port
	// consume=host:port") on EventReady and EventUnavailable.
	Detail string
}

func (e SupervisorEvent) String() string {
	s := fmt.Sprintf("%s %s", e.Child, e.Kind)
	if e.Failures > 0 {
		s += fmt.Sprintf(" failures=%d", e.Failures)
	}
	if e.Delay > 0 {
		s += fmt.Sprintf(" delay=%s", e.Delay)
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Reason != nil {
		s += ": " + e.Reason.Error()
	}
	return s
}

// supervisorEvent converts the root supervisor's event.
func supervisorEvent(e supervisor.Event) SupervisorEvent {
	return SupervisorEvent{
		Time:     e.Time,
		Kind:     eventKind(e.Kind),
		Child:    e.Child,
		Reason:   e.Reason,
		Failures: e.Failures,
		Delay:    e.Delay,
		Detail:   e.Detail,
	}
}

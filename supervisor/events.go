package supervisor

import (
	"fmt"
	"time"
)

// EventKind says what happened to a supervised child (see Event). Package
// hato exports it and its values as hato.EventKind, hato.EventReady, ....
type EventKind int

const (
	// EventReady: the child reported ChildReady: it is connected and
	// working, at start and again after each reconnection or restart.
	EventReady EventKind = iota + 1
	// EventFailed: the child crashed (panicked); a restart is scheduled
	// after Event.Delay.
	EventFailed
	// EventRestarted: the child was restarted after a failure.
	EventRestarted
	// EventStopped: the child stopped although nobody asked the supervisor
	// to stop it (it was stopped or poisoned from outside); it is spawned
	// again after Event.Delay.
	EventStopped
	// EventRespawned: a stopped child was spawned again.
	EventRespawned
	// EventGaveUp: the child exhausted its restart budget or failed
	// permanently. It is stopped and stays stopped.
	EventGaveUp
	// EventUnavailable: the child lost its connection or channel and is
	// recovering by itself (an EventReady follows when it has).
	EventUnavailable
	// EventPaused: a route's circuit breaker opened: it consumes nothing
	// until a trial after Event.Delay (Reason says why). It stays ready.
	EventPaused
	// EventResumed: a paused route consumes again; Event.Delay is how long
	// it was paused.
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

// Event is one supervision event: what happened to a supervised child (in
// hato, the service's connection or one of its routes). Every event is
// logged; Config.OnEvent receives them too. Package hato exports it as
// hato.SupervisorEvent (see hato.WithSupervisorEvents).
type Event struct {
	// Time is when it happened.
	Time time.Time
	// Kind is what happened.
	Kind EventKind
	// Child is who it happened to: in hato, "connection" or the route's
	// name (hato.RouteInfo.Name).
	Child string
	// Reason is why the child failed, stopped or gave up (nil for
	// EventReady, EventRestarted, EventRespawned). A panic that was not an
	// error reads "panic: <value>" (a *PanicError).
	Reason error
	// Failures counts the child's failures since it last ran quietly for
	// Policy.ResetAfter (hato.RestartPolicy.ResetAfter).
	Failures int
	// Delay is the backoff before the restart (EventFailed, EventStopped);
	// for EventPaused the cooldown before the first trial, for
	// EventResumed how long the route was paused.
	Delay time.Duration
	// Detail is where it happened, when the child says (with ChildReady or
	// ChildFailed): for hato's "connection", the broker node of each
	// connection ("publish=host:port consume=host:port") on EventReady and
	// EventUnavailable.
	Detail string
}

func (e Event) String() string {
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

// PanicError is the Reason of an EventFailed caused by a panic that was not
// an error.
type PanicError struct {
	Value any
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

func asError(reason any) error {
	if err, ok := reason.(error); ok {
		return err
	}
	return &PanicError{Value: reason}
}

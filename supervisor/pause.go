package supervisor

import "time"

// ChildPaused is sent by a child that paused (its circuit breaker opened:
// it consumes nothing for now) or resumed. A paused child stays ready:
// pausing is how it copes with a failing dependency, not a failure.
type ChildPaused struct {
	Name string
	// Resumed: the child consumes again; For is how long it was paused.
	// Otherwise it paused for at least For because of Reason.
	Resumed bool
	Reason  error
	For     time.Duration
}

// childPaused reports a pause or resume as an event.
func (r *root) childPaused(msg *ChildPaused) {
	if r.children[msg.Name] == nil {
		return
	}
	kind := EventPaused
	if msg.Resumed {
		kind = EventResumed
	}
	r.emit(Event{Kind: kind, Child: msg.Name, Reason: msg.Reason, Delay: msg.For})
}

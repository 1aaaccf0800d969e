package testutil

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/hato-go/hato"
)

// SupervisorEvents records supervision events; pass its Add to
// hato.WithSupervisorEvents. Safe for concurrent use.
type SupervisorEvents struct {
	mu   sync.Mutex
	list []hato.SupervisorEvent
}

// Add records an event.
func (e *SupervisorEvents) Add(ev hato.SupervisorEvent) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

// Count is how many events of kind were recorded.
func (e *SupervisorEvents) Count(kind hato.EventKind) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.list {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// FirstAfter is the time of the first event of kind after t0.
func (e *SupervisorEvents) FirstAfter(kind hato.EventKind, t0 time.Time) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.list {
		if ev.Kind == kind && ev.Time.After(t0) {
			return ev.Time, true
		}
	}
	return time.Time{}, false
}

// DeliveryEvents records delivery events; pass its Add to
// hato.WithDeliveryEvents. Safe for concurrent use.
type DeliveryEvents struct {
	mu   sync.Mutex
	list []hato.DeliveryEvent
}

// Add records an event.
func (d *DeliveryEvents) Add(e hato.DeliveryEvent) {
	d.mu.Lock()
	d.list = append(d.list, e)
	d.mu.Unlock()
}

// Snapshot returns the events so far.
func (d *DeliveryEvents) Snapshot() []hato.DeliveryEvent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]hato.DeliveryEvent(nil), d.list...)
}

// Len is the number of events so far.
func (d *DeliveryEvents) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.list)
}

// Snapshot is a copy of the supervision events recorded so far.
func (e *SupervisorEvents) Snapshot() []hato.SupervisorEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]hato.SupervisorEvent(nil), e.list...)
}

// Unavailable counts the EventUnavailable events of child (a route)
// whose reason wraps target.
func (e *SupervisorEvents) Unavailable(child string, target error) int {
	n := 0
	for _, ev := range e.Snapshot() {
		if ev.Kind == hato.EventUnavailable && ev.Child == child && errors.Is(ev.Reason, target) {
			n++
		}
	}
	return n
}

// Reasons joins the reasons of child's events, "; " between them.
func (e *SupervisorEvents) Reasons(child string) string {
	var out []string
	for _, ev := range e.Snapshot() {
		if ev.Child == child && ev.Reason != nil {
			out = append(out, ev.Reason.Error())
		}
	}
	return strings.Join(out, "; ")
}

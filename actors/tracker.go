package actors

import (
	"context"
	"sync"
)

// Tracker counts the publishes a handler makes while it handles one
// delivery, so the delivery is acked only after every one of them was
// confirmed. The handler does not wait for the confirms: its publishes are
// pipelined, and the delivery is acked when the tracker settles (by the
// goroutine that settles it, through the session's ack gate), then the
// consumer actor is told.
type Tracker struct {
	mu      sync.Mutex
	pending int
	sealed  bool
	fired   bool
	// skip: the handler failed, so onSettle is not called (its delivery
	// is not acked); AfterSettle callbacks still run.
	skip     bool
	err      error
	onSettle func(err error)
	to       settler            // instead of onSettle (no closure to allocate)
	after    []func(err error)  // see AfterSettle
	afterBuf [2]func(err error) // after's first two (telemetry's, dedupe's), not allocated

	attempt int  // the handler attempt this tracker belongs to (1 = first)
	first   bool // the first handler run of this delivery
}

func newTracker(attempt int, first bool, onSettle func(err error)) *Tracker {
	return &Tracker{attempt: attempt, first: first, onSettle: onSettle}
}

// Attempt is the number of the handler attempt the tracker belongs to,
// counting the message's failed attempts before a redelivery: 1 is the
// first attempt, more is a retry.
func (t *Tracker) Attempt() int { return t.attempt }

// FirstRun reports whether this is the first handler run of the delivery
// (a redelivered message's first run after the broker delivered it again).
func (t *Tracker) FirstRun() bool { return t.first }

// Add registers one more publish. It returns false once the handler has
// returned (the tracker is sealed): the publisher must then wait for its own
// confirm instead.
func (t *Tracker) Add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sealed {
		return false
	}
	t.pending++
	return true
}

// Done records the outcome of one publish registered with Add.
func (t *Tracker) Done(err error) {
	t.mu.Lock()
	t.pending--
	if err != nil && t.err == nil {
		t.err = err
	}
	fire := t.sealed && t.pending == 0 && !t.fired
	if fire {
		t.fired = true
	}
	err = t.err
	t.mu.Unlock()
	if fire {
		t.fire(err)
	}
}

// seal marks the handler as returned; the settle callback runs once every
// registered publish is done (at once if none is pending).
func (t *Tracker) seal() {
	t.mu.Lock()
	t.sealed = true
	fire := t.pending == 0 && !t.fired
	if fire {
		t.fired = true
	}
	err := t.err
	t.mu.Unlock()
	if fire {
		t.fire(err)
	}
}

// finish seals the tracker when the handler returned; ok reports that it
// succeeded (the delivery is to be acked once its publishes are confirmed).
// If no publish is pending the tracker settles now: finish reports true and
// the publish outcome, calls neither onSettle nor the AfterSettle callbacks
// (the worker reports both outcomes in one message, then calls runAfter).
// Otherwise it calls pending under the tracker's lock, so that what pending
// sends comes before what onSettle sends, and reports false.
func (t *Tracker) finish(ok bool, pending func()) (bool, error) {
	t.mu.Lock()
	t.sealed, t.skip = true, !ok
	if t.pending == 0 && !t.fired {
		t.fired = true
		err := t.err
		t.mu.Unlock()
		return true, err
	}
	pending()
	t.mu.Unlock()
	return false, nil
}

// AfterSettle registers fn to run once the tracker settles: the handler
// returned and every publish it made has an outcome; err is the first
// publish failure, nil when all were confirmed. fn runs after the consumer
// actor was told (so a nil err from a handler that returned nil means the
// delivery is being acked), on the goroutine that settled the tracker (the
// handler's worker or the publisher's): it must not block. Register it
// from the handler, before it returns; it returns false, and fn never
// runs, once the tracker is sealed.
func (t *Tracker) AfterSettle(fn func(err error)) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sealed {
		return false
	}
	if t.after == nil {
		t.after = t.afterBuf[:0]
	}
	t.after = append(t.after, fn)
	return true
}

// fire runs the settle callbacks, exactly once (the caller set fired).
func (t *Tracker) fire(err error) {
	t.mu.Lock()
	skip := t.skip
	t.mu.Unlock()
	switch {
	case skip:
	case t.to != nil:
		t.to.settled(err)
	default:
		t.onSettle(err)
	}
	t.runAfter(err)
}

// runAfter runs the AfterSettle callbacks.
func (t *Tracker) runAfter(err error) {
	t.mu.Lock()
	after := t.after
	t.mu.Unlock()
	for _, fn := range after {
		fn(err)
	}
}

// settler is told when a tracker settles (see Tracker.fire).
type settler interface{ settled(err error) }

type trackerKey struct{}

// TrackerFrom returns the tracker of the delivery being handled in ctx, if
// any.
func TrackerFrom(ctx context.Context) *Tracker {
	t, _ := ctx.Value(trackerKey{}).(*Tracker)
	return t
}

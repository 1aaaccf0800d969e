package supervisor

import (
	"time"
)

// The lifecycle protocol between the root supervisor and its children.
// Children report with ctx.Send(ctx.Parent(), ...); the root sends Drain.

// ChildReady is sent by a child to its parent each time it becomes ready
// (connected, consuming). The first one counts for AwaitReady.
type ChildReady struct {
	Name string
	// Detail says where the child is ready, e.g. the broker node its
	// connections are on; it is copied to the EventReady (may be empty).
	Detail string
}

// ChildFailed is sent by a child that cannot do its job. A Permanent
// failure (a conflicting declaration, refused access) is not retried: the
// root stops the child and reports EventGaveUp. A transient one (a lost
// connection or channel) is reported as EventUnavailable; the child
// recovers by itself and reports ChildReady again.
type ChildFailed struct {
	Name      string
	Err       error
	Permanent bool
	// Detail says where the child failed, e.g. the broker node it lost;
	// it is copied to the event (may be empty).
	Detail string
}

// Drain asks a child to finish its work gracefully before Deadline: stop
// taking new work, finish what is in hand, return the rest. The child closes
// Done when it has drained (or gave up at the deadline). It stays alive until
// stopped. A child that could not finish everything calls Unfinished (when
// set) with how much it gave back or left, before closing Done.
type Drain struct {
	Deadline   time.Time
	Done       chan struct{}
	Unfinished func(n int)
}

// Messages for the root supervisor itself.

// AwaitReady asks the root to send on Done once every child has reported
// ChildReady (nil), or a child failed permanently (its error). Done must be
// buffered (capacity 1).
type AwaitReady struct {
	Done chan error
}

// DrainChildren drains the named children (all when Names is empty) in
// parallel and closes Done when all have drained. Unfinished, when set, is
// called (from any goroutine) for each child that reported unfinished work.
type DrainChildren struct {
	Names      []string
	Deadline   time.Time
	Done       chan struct{}
	Unfinished func(child string, n int)
}

// restartDue fires when a failed child's backoff has passed.
type restartDue struct {
	name string
	seq  uint64
}

// respawnDue fires when an unexpectedly stopped child's backoff has passed.
type respawnDue struct {
	name string
	seq  uint64
}

// scheduled is a message the root sent itself after a backoff, stamped with
// the child's pending sequence at the time; Receive drops it when stale.
type scheduled interface {
	scheduledFor() (name string, seq uint64)
}

func (m *restartDue) scheduledFor() (string, uint64) { return m.name, m.seq }
func (m *respawnDue) scheduledFor() (string, uint64) { return m.name, m.seq }

package actors

import (
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato/broker"
)

// DirectPublish lets code outside the connection actor hand a publish
// request straight to the actor's publishing channel, skipping the actor's
// mailbox and one goroutine hand-off, while that channel is open and the
// actor holds nothing buffered. Share one with the actor through
// ConnectionConfig.Direct; the zero value is ready to use (and declines
// everything until an actor opens its channel).
//
// When Submit declines (not connected, publishes buffered or handed back by
// a closed channel, or the publish buffer full), send the request to the
// actor in a Publish message as usual: nothing is kept, and the actor's
// buffering, reconnection and ErrBufferFull apply. A request Submit accepted
// is the actor's like any other: if the channel closes first, it is handed
// back and resent, or finished with ErrClosed when the actor stops.
//
// Order: requests handed over directly are written in the order Submit
// accepted them. Use Send to keep order with the mailbox too: a request
// Send passes to the mailbox is counted until the actor took it, and while
// any is counted Submit declines, so a later request cannot be handed over
// directly ahead of it. (A request someone sends through the mailbox
// without Send is not counted: it may be written after a later one handed
// over directly, when it was sent while the channel was (re)opening.)
type DirectPublish struct {
	pub   atomic.Pointer[broker.Publisher]
	limit atomic.Int64 // the actor's PublishBuffer
	// queued counts the requests Send passed to the actor's mailbox that the
	// actor has not taken yet.
	queued atomic.Int64
}

// Submit hands r to the open publishing channel and reports true, or
// reports false having kept nothing.
func (d *DirectPublish) Submit(r *broker.Request) bool {
	if d == nil {
		return false
	}
	p := d.pub.Load()
	if p == nil || d.queued.Load() > 0 || int64(p.Outstanding()) >= d.limit.Load() {
		return false
	}
	return p.Submit(r)
}

// Send hands r to the open publishing channel (see Submit), or else sends it
// to the connection actor pid in a Publish message, counted until the actor
// takes it, so that no request Submit or Send hands over later is written
// before it. It reports whether r went directly. It never blocks. d may be
// nil (every request then goes through the mailbox).
func (d *DirectPublish) Send(root *actor.RootContext, pid *actor.PID, r *broker.Request) bool {
	if d.Submit(r) {
		return true
	}
	if d != nil {
		d.queued.Add(1)
	}
	root.Send(pid, &Publish{Req: r, counted: d})
	return false
}

// taken uncounts a request Send passed to the mailbox, once the actor took
// it (submitted it to the channel, buffered it, or finished it).
func (d *DirectPublish) taken() {
	if d != nil {
		d.queued.Add(-1)
	}
}

// open makes p the channel direct publishes go to; nil stops them.
func (d *DirectPublish) open(p *broker.Publisher) {
	if d != nil {
		d.pub.Store(p)
	}
}

package actors

import (
	"sync/atomic"

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
// accepted them. A request sent through the mailbox while the channel was
// (re)opening may be written after a later one handed over directly.
type DirectPublish struct {
	pub   atomic.Pointer[broker.Publisher]
	limit atomic.Int64 // the actor's PublishBuffer
}

// Submit hands r to the open publishing channel and reports true, or
// reports false having kept nothing.
func (d *DirectPublish) Submit(r *broker.Request) bool {
	if d == nil {
		return false
	}
	p := d.pub.Load()
	if p == nil || int64(p.Outstanding()) >= d.limit.Load() {
		return false
	}
	return p.Submit(r)
}

// open makes p the channel direct publishes go to; nil stops them.
func (d *DirectPublish) open(p *broker.Publisher) {
	if d != nil {
		d.pub.Store(p)
	}
}

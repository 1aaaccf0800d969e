package actors

import (
	"slices"
	"sync"
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

	// sent holds every Publish message Send and Post, and every OpenChannel
	// PostOpen, sent to the actor that nobody took yet, with its send order.
	// Each is taken exactly once: by the actor's Receive (Publish.Take,
	// OpenChannel.Take), or, if the actor stopped with it in its mailbox or
	// it was sent to a stopped actor, by the actor's Stopping or the next
	// incarnation's Started (sweep). Without it such a request is dropped
	// with the mailbox: a publish's caller waits to its deadline, a route
	// waits channelReplyTimeout for its channel (issue 17-3b). See
	// DESIGN.md, "DirectPublish".
	mu   sync.Mutex
	sent map[any]uint64 // *Publish or *OpenChannel
	seq  uint64
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
	if d == nil {
		root.Send(pid, &Publish{Req: r})
		return false
	}
	d.queued.Add(1)
	msg := &Publish{Req: r, counted: d, via: d}
	d.register(msg)
	root.Send(pid, msg)
	return false
}

// Post sends r to the connection actor pid in a Publish message through
// send (an actor.Context's or a RootContext's Send), registered so that it
// is resolved even if the actor stops before taking it: resent by the
// actor's next incarnation, or finished with ErrClosed. Unlike Send it never
// hands r over directly and does not hold direct publishes back. d may be
// nil (a plain Publish message).
func (d *DirectPublish) Post(send func(*actor.PID, any), pid *actor.PID, r *broker.Request) {
	msg := &Publish{Req: r}
	if d != nil {
		msg.via = d
		d.register(msg)
	}
	send(pid, msg)
}

// PostOpen sends msg to the connection actor pid through send, registered
// like Post's publishes: if the actor stops before taking it, it is answered
// with ErrClosed at the stop, or served by the next incarnation when it was
// sent after the stop. d may be nil (a plain send).
func (d *DirectPublish) PostOpen(send func(*actor.PID, any), pid *actor.PID, msg *OpenChannel) {
	if d != nil {
		msg.via = d
		d.register(msg)
	}
	send(pid, msg)
}

func (d *DirectPublish) register(msg any) {
	d.mu.Lock()
	if d.sent == nil {
		d.sent = make(map[any]uint64)
	}
	d.seq++
	d.sent[msg] = d.seq
	d.mu.Unlock()
}

// claim takes msg out of the registry; false if someone took it already.
func (d *DirectPublish) claim(msg any) bool {
	d.mu.Lock()
	_, ok := d.sent[msg]
	delete(d.sent, msg)
	d.mu.Unlock()
	return ok
}

// sweep takes every registered message nobody took, in send order: the
// requests of Publish messages (the ones Send counted are uncounted) and
// the OpenChannel messages.
func (d *DirectPublish) sweep() (reqs []*broker.Request, opens []*OpenChannel) {
	if d == nil {
		return nil, nil
	}
	d.mu.Lock()
	msgs := make([]any, 0, len(d.sent))
	for msg := range d.sent {
		msgs = append(msgs, msg)
	}
	slices.SortFunc(msgs, func(a, b any) int { return compareSeq(d.sent[a], d.sent[b]) })
	clear(d.sent)
	d.mu.Unlock()
	for _, msg := range msgs {
		switch msg := msg.(type) {
		case *Publish:
			reqs = append(reqs, msg.Req)
			msg.counted.taken()
		case *OpenChannel:
			opens = append(opens, msg)
		}
	}
	return reqs, opens
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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

package actors

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// reopen asks for a channel again after a loss, unless the route is
// draining or drained: a reopen scheduled before the drain must not start
// consuming again after it.
func (c *consumer) reopen(ctx actor.Context) {
	if c.session == nil && !c.opening && c.drain == nil && !c.drained && c.brk.state != BreakerOpen { // outage hook: no reopen while paused
		c.requestChannel(ctx)
	}
}

// abandonOpen gives the open in progress up: what it holds or gets later
// is closed, and its sessionStarted, if on its way, is stale.
func (c *consumer) abandonOpen() {
	c.opening = false
	c.dropOpening()
	c.gen++
}

// channelReplyTimeout bounds the wait for the connection actor's reply to
// OpenChannel. A request sent while the connection actor is stopped (being
// respawned by the root supervisor) is served by the next incarnation when
// it was posted through ConsumerConfig.Direct; without it (unit tests, an
// embedder's connection actor) it goes to dead letters and is never answered
// (issue 17-3b). While the connection is down a request waits in the
// connection actor, so this is long: a timed-out request is abandoned and a
// new one sent after the reopen backoff.
const channelReplyTimeout = 30 * time.Second

// requestChannel asks the connection actor for a channel. The reply goes to
// an inbox of the request, which forwards it while the request is live and
// closes the channel once it is not (the actor stopped or restarted, or
// the request timed out: see openTimedOut).
func (c *consumer) requestChannel(ctx actor.Context) {
	c.opening = true
	c.replied = false
	c.nonce = rand.Uint64()
	c.after(c.replyTimeout, &openTimeout{inc: c.inc, nonce: c.nonce})
	op, self, sys := &opening{}, c.self, c.sys
	c.op = op
	inbox := newReplyInbox(sys, func(msg any) {
		r, ok := msg.(*ChannelReply)
		if ok && (r.Channel == nil || op.holdChannel(r.Channel)) {
			sys.Root.Send(self, r)
		}
	})
	c.direct.PostOpen(ctx.Send, c.conn, &OpenChannel{ReplyTo: inbox, Nonce: c.nonce})
}

// openTimedOut abandons a channel request still unanswered: its inbox
// stays registered, so a reply that comes later still has its channel
// closed (opening.holdChannel). Then the route asks again after the reopen
// backoff, or, draining, finishes the drain.
func (c *consumer) openTimedOut(msg *openTimeout) {
	if !c.opening || c.replied || msg.nonce != c.nonce {
		return
	}
	c.abandonOpen()
	if c.drain != nil {
		c.finishDrain()
		return
	}
	c.scheduleReopen(errChannelReplyTimeout)
}

var errChannelReplyTimeout = errors.New("hato: no reply to a channel request")

// dropOpening ends the open in progress, closing what it holds.
func (c *consumer) dropOpening() {
	if c.op != nil {
		c.op.abandon()
		c.op = nil
	}
}

func (c *consumer) channelReply(msg *ChannelReply) {
	if msg.Nonce != c.nonce || !c.opening {
		// Stale: from an earlier request or incarnation.
		if msg.Channel != nil {
			go func() { _ = msg.Channel.Close() }()
		}
		return
	}
	c.replied = true
	if c.drain != nil {
		c.opening = false
		c.dropOpening()
		if msg.Channel != nil {
			go func() { _ = msg.Channel.Close() }()
		}
		c.finishDrain()
		return
	}
	if msg.Err != nil {
		c.opening = false
		c.dropOpening()
		c.scheduleReopen(fmt.Errorf("open channel: %w", msg.Err))
		return
	}
	c.gen++
	c.gate = &ackGate{}
	inc, gen, self, sys := c.inc, c.gen, c.self, c.sys
	cfg := broker.SessionConfig{
		Topology:       c.route.Topology,
		Prefetch:       c.sessionPrefetch(), // outage hook: the trial prefetch while half-open
		GlobalPrefetch: c.route.GlobalPrefetch,
		Deliver: func(d *broker.Delivery) {
			j := &job{d: d}
			j.arrival = deliveryArrived{inc: inc, gen: gen, j: j}
			sys.Root.Send(self, &j.arrival)
		},
		Closed: func(err error) {
			sys.Root.Send(self, &sessionEnded{inc: inc, gen: gen, err: err})
		},
	}
	ch, op, start := msg.Channel, c.op, c.begin
	c.fx.setup(msg.Setup, func() {
		s, q, err := start(ch, cfg)
		if err == nil && !op.holdSession(s) {
			return // the actor is gone: the session is closed, its deliveries go back
		}
		sys.Root.Send(self, &sessionStarted{inc: inc, gen: gen, s: s, q: q, err: err})
	})
}

func (c *consumer) sessionStarted(ctx actor.Context, msg *sessionStarted) {
	c.opening = false
	if c.op != nil {
		c.op.handOver()
		c.op = nil
	}
	if msg.err != nil {
		if c.drain != nil {
			c.finishDrain()
			return
		}
		if broker.Permanent(msg.err) {
			c.log.Error("route cannot consume", zap.String("queue", c.route.Topology.Queue), zap.Error(msg.err))
			ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: msg.err, Permanent: true})
			return
		}
		// Transient (e.g. 404 "home node down" of a classic queue whose
		// node is gone): say so, then retry with backoff.
		ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: msg.err})
		c.scheduleReopen(msg.err)
		return
	}
	c.session = msg.s
	c.openAttempt = 0
	if c.drain != nil {
		c.drainStarted()
		return
	}
	// Written with the route's fields by the service's logger: the route's
	// own logger stays unencoded until it has something else to say.
	fields := append(slices.Clip(c.route.LogFields),
		zap.String("queue", msg.q.Name), zap.Int("messages", msg.q.Messages),
		zap.String("exchange", c.route.Topology.ExchangeName()), zap.String("binding_key", c.route.Topology.BindingKey))
	c.route.Logger.Info("consuming", fields...)
	ctx.Send(ctx.Parent(), &supervisor.ChildReady{Name: c.route.Name})
}

func (c *consumer) scheduleReopen(err error) {
	c.openAttempt++
	delay := c.route.Reopen.Delay(c.openAttempt)
	c.log.Warn("route channel unavailable, reopening",
		zap.Error(err), zap.Int("attempt", c.openAttempt), zap.Duration("retry_in", delay))
	c.after(delay, &reopen{inc: c.inc})
}

// sessionEnded handles the end of the current session. It may come before
// the session's sessionStarted (the channel died while StartSession
// returned: a lost pool connection, a broker-side cancel): then the open
// is over too, and moving the session generation on makes that
// sessionStarted stale, so it closes the dead session instead of
// installing it and reporting ready (issue 17-3a).
func (c *consumer) sessionEnded(ctx actor.Context, err error) {
	if c.session == nil && c.opening {
		c.abandonOpen()
	} else {
		c.gen++
	}
	c.session = nil
	c.gate.close()
	c.blameRunning(err)
	// Everything held came from that channel: the broker requeued it.
	// Handlers still running finish on their own; their results are void.
	c.jobs = map[uint64]*job{}
	c.queue = nil
	c.waiting = 0
	if c.drain != nil {
		c.drainDone()
		return
	}
	if c.breakerSessionEnded(ctx) { // outage hook: the breaker closed it, or it is paused
		return
	}
	// Only a drain or a restart closes a session on purpose, and a restart
	// changes the incarnation: any other end means reopening.
	if err == nil {
		err = broker.ErrClosed
	}
	c.state.lostChannel()
	ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: err})
	c.scheduleReopen(err)
}

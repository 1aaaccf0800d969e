package actors

import (
	"errors"
	"math"
	"slices"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// The consuming connections form a pool: a consumer channel opens on the
// newest connection, else on an older one with a free channel id, else the
// pool grows by one connection (a broker caps the channels of a connection,
// 2047 by default). The pool is one generation with the publishing
// connection: losing any of them reconnects them all, so a channel of an
// earlier generation is never mistaken for a current one.

// subsFull reports that none of n consuming connections of generation gen
// had a free channel id for req. It is not stamped: req must get an answer
// whatever happened to the connections meanwhile.
type subsFull struct {
	req *OpenChannel
	gen uint64
	n   int
}

// growSubs retries adding a consuming connection after a failed dial.
type growSubs struct{ stamp }

// subDialed is the outcome of dialing one more consuming connection.
type subDialed struct {
	stamp
	conn *amqp.Connection
	err  error
}

// discard closes the connection a stale dial opened.
func (m *subDialed) discard() {
	if m.conn != nil {
		go func() { _ = m.conn.Close() }()
	}
}

// channelMax is the ChannelMax to dial consuming connections with.
func channelMax(perConn int) uint16 {
	if perConn <= 0 {
		return 0
	}
	return uint16(min(perConn, math.MaxUint16))
}

// subName names the i-th consuming connection (from 1): the first keeps
// the configured name, the next ones add "-2", "-3", ….
func subName(base string, i int) string {
	if i <= 1 {
		return base
	}
	return base + "-" + strconv.Itoa(i)
}

// openOn opens a channel on the newest connection of subs that has a free
// channel id; full is true when none has.
func openOn(subs []*amqp.Connection) (ch *amqp.Channel, err error, full bool) {
	n := len(subs)
	for k := range n { // the newest, then the others from the first
		ch, err = subs[(k+n-1)%n].Channel()
		if !errors.Is(err, amqp.ErrChannelMax) {
			return ch, err, false
		}
	}
	return nil, err, true
}

// openFor opens a channel for req on the set-up pool; if the pool of
// connections is full it reports back to grow it.
func (c *connection) openFor(req *OpenChannel) {
	subs, gen, self, sys, setup := slices.Clone(c.subs), c.gen, c.self, c.sys, c.shared.setup
	// On the set-up pool too: ten thousand opens blocked at once would make
	// the runtime start goroutines with 4 KiB stacks (see broker.SetupBase).
	setup.Go(func() {
		ch, err, full := openOn(subs)
		if full {
			sys.Root.Send(self, &subsFull{req: req, gen: gen, n: len(subs)})
			return
		}
		sys.Root.Send(req.ReplyTo, &ChannelReply{Nonce: req.Nonce, Channel: ch, Err: err, Setup: setup})
	})
}

// full handles a channel request no consuming connection had room for.
func (c *connection) full(msg *subsFull) {
	if msg.gen != c.gen || len(c.subs) > msg.n {
		c.openChannel(msg.req) // the pool changed: try again
		return
	}
	c.shared.waiters = append(c.shared.waiters, msg.req)
	c.growSubs()
}

// growSubs dials one more consuming connection to the node of the first.
func (c *connection) growSubs() {
	if c.growing || len(c.subs) == 0 {
		return
	}
	c.growing = true
	cfg := c.subCfg
	cfg.ConnectionName = subName(cfg.ConnectionName, len(c.subs)+1)
	ctx, self, sys, fx, shared := c.ctx, c.self, c.sys, c.cfg.fx, c.shared
	res := &subDialed{stamp: stamp{inc: c.inc, gen: c.gen}}
	go func() {
		res.conn, res.err = fx.dial(ctx, cfg)
		shared.sendDial(ctx, res, func() { sys.Root.Send(self, res) })
	}()
}

// subDialed adds a consuming connection and serves the waiting requests.
func (c *connection) subDialed(msg *subDialed) {
	c.growing = false
	if msg.err != nil {
		c.growFailures++
		delay := c.cfg.Reconnect.Delay(c.growFailures)
		c.log.Warn("opening one more consuming connection failed", zap.Error(msg.err),
			zap.Int("connections", len(c.subs)), zap.Int("attempt", c.growFailures), zap.Duration("retry_in", delay))
		c.after(delay, &growSubs{stamp: stamp{inc: c.inc, gen: c.gen}})
		return
	}
	c.growFailures = 0
	c.subs = append(c.subs, msg.conn)
	c.watch(msg.conn)
	c.log.Info("consuming connection added", zap.Int("connections", len(c.subs)),
		zap.String("consume_connection", subName(c.subCfg.ConnectionName, len(c.subs))))
	waiters := c.shared.waiters
	c.shared.waiters = nil
	for _, w := range waiters {
		c.openFor(w)
	}
}

// watch reports the loss of conn, a connection of the current generation.
func (c *connection) watch(conn *amqp.Connection) {
	st, self, sys := stamp{inc: c.inc, gen: c.gen}, c.self, c.sys
	closes := c.cfg.fx.notifyClose(conn, make(chan *amqp.Error, 1))
	go func() {
		// amqp091-go sends at most one error, then closes the channel.
		err := broker.ErrClosed
		for e := range closes {
			if e != nil {
				err = e
			}
		}
		sys.Root.Send(self, &connLost{stamp: st, err: err})
	}()
}

package broker

import (
	"fmt"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SessionConfig configures a Session.
type SessionConfig struct {
	// Topology is declared before consuming.
	Topology Topology
	// Prefetch is the per-consumer prefetch (basic.qos global=false).
	Prefetch int
	// GlobalPrefetch is the per-channel prefetch (basic.qos global=true).
	// Zero leaves it unset; it is not set for quorum queues, which refuse it.
	GlobalPrefetch int
	// Tag is the consumer tag; empty means a random "hato-..." tag.
	Tag string
	// Deliver is called for each delivery, in order, from the session's
	// goroutine. It must not block (send the delivery to an actor).
	Deliver func(*Delivery)
	// Closed is called exactly once, after the last Deliver, when the session
	// ends: err is nil after Close, otherwise why the channel died.
	Closed func(err error)
}

// Session is one channel consuming one queue. It is the channel's only
// owner: its session goroutine receives the deliveries, and every other
// AMQP call on the channel (acks, nacks, cancel, close) is made by one
// flusher goroutine at a time, started when the owner queues an op and
// gone when none is left, so acks from any goroutine are safe, never block
// the caller, and keep their order. The acks a flusher finds queued
// together are coalesced: one multiple ack over the contiguous run of the
// oldest unsettled deliveries they settle (never past one that is not
// acked), the others one by one. Acks after the session ended are dropped:
// the broker has already requeued those deliveries, and a delivery tag
// never reaches any other channel.
//
// An idle session holds one goroutine, parked in a plain channel receive
// with a small stack (see run).
type Session struct {
	ch       *amqp.Channel
	tag      string          // SessionConfig's
	handOver func(*Delivery) // SessionConfig.Deliver
	closed   func(error)     // SessionConfig.Closed

	mu       sync.Mutex
	ops      []op
	flushing bool // a flusher goroutine is running
	stopped  bool // no more ops accepted
	batch    []op // the running flusher's

	stMu sync.Mutex
	st   runState
}

type opKind int

const (
	opAck opKind = iota
	opNack
	opReject
	opCancel
	opClose
)

type op struct {
	kind    opKind
	tag     uint64
	requeue bool
}

// Delivery is a message received by a Session. Settle it exactly once with
// Ack, Nack or Reject; they never block.
//
// A Delivery built outside a Session (a test's fake session) is settled
// through its amqp.Delivery's Acknowledger instead.
type Delivery struct {
	amqp.Delivery
	session *Session
}

// Ack acknowledges the delivery on the channel it came from.
func (d *Delivery) Ack() { d.settle(op{kind: opAck, tag: d.DeliveryTag}) }

// Nack negatively acknowledges the delivery; requeue puts it back in the queue.
func (d *Delivery) Nack(requeue bool) {
	d.settle(op{kind: opNack, tag: d.DeliveryTag, requeue: requeue})
}

// Reject rejects the delivery; requeue puts it back in the queue.
func (d *Delivery) Reject(requeue bool) {
	d.settle(op{kind: opReject, tag: d.DeliveryTag, requeue: requeue})
}

func (d *Delivery) settle(o op) {
	if d.session != nil {
		d.session.enqueue(o)
		return
	}
	switch o.kind {
	case opAck:
		_ = d.Acknowledger.Ack(o.tag, false)
	case opNack:
		_ = d.Acknowledger.Nack(o.tag, false, o.requeue)
	case opReject:
		_ = d.Acknowledger.Reject(o.tag, o.requeue)
	}
}

// StartSession sets ch up (QoS, topology, basic.consume) and starts the
// session goroutine. It blocks on broker round trips: call it off any actor's
// mailbox. On error ch is closed and no callback is ever called.
func StartSession(ch *amqp.Channel, cfg SessionConfig) (*Session, amqp.Queue, error) {
	fail := func(err error) (*Session, amqp.Queue, error) {
		_ = ch.Close()
		return nil, amqp.Queue{}, err
	}
	// Notification channels are registered before anything can close the
	// channel and are drained until amqp091-go closes them.
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	cancels := ch.NotifyCancel(make(chan string, 1))

	if cfg.Tag == "" {
		cfg.Tag = "hato-" + RandomID()
	}
	if err := ch.Qos(cfg.Prefetch, 0, false); err != nil {
		return fail(classify("basic.qos", err))
	}
	// Quorum queues refuse a per-channel (global) prefetch with a
	// connection-level error; the channel has only this consumer anyway.
	if cfg.GlobalPrefetch > 0 && cfg.Topology.QueueType != Quorum {
		if err := ch.Qos(cfg.GlobalPrefetch, 0, true); err != nil {
			return fail(classify("basic.qos global", err))
		}
	}
	q, err := cfg.Topology.Declare(ch)
	if err != nil {
		return fail(err)
	}
	deliveries, err := ch.Consume(cfg.Topology.Queue, cfg.Tag, false, false, false, false, nil)
	if err != nil {
		return fail(classify(fmt.Sprintf("consume %q", cfg.Topology.Queue), err))
	}
	// The rest of cfg (the topology above all) is not kept: an idle route
	// holds it elsewhere already.
	c := &Session{ch: ch, tag: cfg.Tag, handOver: cfg.Deliver, closed: cfg.Closed}
	// The first Delivery is allocated here, not on the session's goroutine:
	// an allocation can take the allocator's slow path, whose stack depth
	// would grow that goroutine's stack for good before it first parks.
	liveConsumers.Add(1)
	go c.run(deliveries, closes, cancels, &Delivery{session: c})
	return c, q, nil
}

// Cancel stops deliveries (basic.cancel) but keeps the channel open so
// deliveries in hand can still be settled. Non-blocking.
func (c *Session) Cancel() { c.enqueue(op{kind: opCancel}) }

// Alive reports whether the session's channel is open. Non-blocking: a
// liveness check may call it from any goroutine.
func (c *Session) Alive() bool { return !c.ch.IsClosed() }

// Close closes the channel; the broker requeues every unsettled delivery.
// Non-blocking; Closed is called when the channel is gone. Settlements
// enqueued before Close are sent first.
func (c *Session) Close() { c.enqueue(op{kind: opClose}) }

// enqueue queues o and starts a flusher unless one is running.
func (c *Session) enqueue(o op) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.ops = append(c.ops, o)
	start := !c.flushing
	c.flushing = true
	c.mu.Unlock()
	if start {
		go c.flush()
	}
}

// flush is a flusher goroutine: it applies the queued ops, batch by batch,
// until none is left.
func (c *Session) flush() {
	for {
		c.mu.Lock()
		if len(c.ops) == 0 || c.stopped {
			c.flushing = false
			c.mu.Unlock()
			return
		}
		c.batch, c.ops = c.ops, c.batch[:0] // swap: no copy, both arrays kept
		c.mu.Unlock()
		c.stMu.Lock()
		c.applyOps(&c.st, c.batch)
		c.stMu.Unlock()
	}
}

func (c *Session) stop() {
	c.mu.Lock()
	c.stopped = true
	c.ops = nil
	c.mu.Unlock()
}

// runState is the session's state, guarded by stMu.
type runState struct {
	closeErr  error
	closing   bool
	requested bool // the owner asked for the close
	// unsettled holds the tags of the deliveries handed to the owner and not
	// settled yet, ascending; acks holds the acks of the batch being applied
	// (see flushAcks).
	unsettled []uint64
	acks      []uint64
	singles   []uint64
}

// run is the session's goroutine. It receives deliveries until amqp091-go
// closes their channel (the channel closed, or the consumer was
// cancelled), then ends the session (see end).
//
// An idle route's session spends its life parked here, so run parks in a
// plain receive with as little below it as can be: the Delivery being
// received, nothing else. The runtime starts a goroutine with a 2 KiB stack
// (while the average stack in use stays small, see SetupBase) and
// grows it for good (a parked stack is not shrunk) if the deepest call
// before it first parks does not fit: here, the runtime allocating the
// wait's bookkeeping under the receive. A select over four channels did
// not fit for half of the sessions; this loop, with deliver and end kept
// out of its frame, fits.
func (c *Session) run(deliveries <-chan amqp.Delivery, closes <-chan *amqp.Error, cancels <-chan string, next *Delivery) {
	for receive(deliveries, &next.Delivery) {
		next = c.deliver(next)
	}
	c.end(closes, cancels)
}

// receive receives the next delivery into into; false when deliveries is
// closed.
//
//go:noinline // inlined, run's frame would hold the Delivery twice
func receive(deliveries <-chan amqp.Delivery, into *amqp.Delivery) bool {
	d, ok := <-deliveries
	*into = d
	return ok
}

// end ends the session once the deliveries did: it closes the channel if
// the broker cancelled the consumer, waits for the channel to close (after
// the owner's own basic.cancel it stays open for the owner's settlements
// until the owner closes it), and reports how the session ended.
//
//go:noinline // its frame stays out of run's (see run)
func (c *Session) end(closes <-chan *amqp.Error, cancels <-chan string) {
	// The broker's basic.cancel is announced before the deliveries end.
	select {
	case tag, ok := <-cancels:
		if ok {
			c.cancelled(tag)
		}
	default:
	}
	for e := range closes {
		c.fail(e)
	}
	c.finish(cancels)
}

// deliver hands d to the owner unless the session is closing, and returns
// the Delivery to receive the next one into.
//
//go:noinline // its frame stays out of run's (see run)
func (c *Session) deliver(d *Delivery) *Delivery {
	c.stMu.Lock()
	closing := c.st.closing
	if !closing {
		c.st.unsettled = append(c.st.unsettled, d.DeliveryTag)
	}
	c.stMu.Unlock()
	if closing {
		return d // dropped: the broker requeues it
	}
	c.handOver(d)
	return &Delivery{session: c}
}

// finish ends the session once amqp091-go closed its channels.
func (c *Session) finish(cancels <-chan string) {
	// Drain a cancel notification amqp091-go may still hold.
	go func() {
		for range cancels {
		}
	}()
	c.stop()
	liveConsumers.Add(-1)
	c.stMu.Lock()
	err := c.st.result()
	c.stMu.Unlock()
	c.closed(err)
}

// fail records the first error that closes the channel.
func (c *Session) fail(err error) {
	c.stMu.Lock()
	c.st.fail(err)
	c.stMu.Unlock()
}

func (st *runState) fail(err error) {
	if err != nil && st.closeErr == nil {
		st.closeErr = err
	}
}

// cancelled handles the broker cancelling the consumer: the channel is
// closed, and its close notification ends the session.
func (c *Session) cancelled(tag string) {
	c.stMu.Lock()
	defer c.stMu.Unlock()
	if c.st.closing {
		return
	}
	c.st.closeErr = fmt.Errorf("consumer %q: %w", tag, ErrConsumerCancelled)
	c.st.closing = true
	go func() { _ = c.ch.Close() }()
}

// applyOps performs a batch of the owner's acks, nacks and closes, up to
// the first that closes the channel. The batch's acks are coalesced (see
// flushAcks) and sent after its nacks and rejects, before a close.
func (c *Session) applyOps(st *runState, ops []op) {
	if st.closing {
		return
	}
	for _, o := range ops {
		if o.kind == opAck {
			st.acks = append(st.acks, o.tag)
			continue
		}
		if o.kind == opClose {
			st.requested = true
			if !c.flushAcks(st) {
				return
			}
		}
		if err := c.apply(o); err != nil || o.kind == opClose {
			if err != nil {
				st.fail(err)
			}
			st.closing = true
			return
		}
		if o.kind == opNack || o.kind == opReject {
			st.unsettled = removeTag(st.unsettled, o.tag)
		}
	}
	c.flushAcks(st)
}

// flushAcks sends the batch's acks: one multiple ack over the contiguous
// prefix of the unsettled tags they settle, and each other one on its own.
// A multiple ack never covers a tag that is not being acked. It reports
// false, the loop closing, if the channel failed.
func (c *Session) flushAcks(st *runState) bool {
	if len(st.acks) == 0 {
		return true
	}
	if !slices.IsSorted(st.acks) {
		slices.Sort(st.acks)
	}
	var plan ackPlan
	st.unsettled, plan = planAcks(st.unsettled, st.acks, st.singles[:0])
	st.acks, st.singles = st.acks[:0], plan.singles
	var err error
	if plan.prefix > 0 {
		err = c.ackTag(plan.upTo, plan.prefix > 1)
	}
	for _, tag := range plan.singles {
		if err != nil {
			break
		}
		err = c.ackTag(tag, false)
	}
	if err != nil {
		st.fail(err)
		st.closing = true
		return false
	}
	return true
}

func (c *Session) ackTag(tag uint64, multiple bool) error {
	err := c.ch.Ack(tag, multiple)
	if err != nil {
		go func() { _ = c.ch.Close() }()
	}
	return err
}

// ackPlan is how a batch of acks is sent: a multiple ack up to upTo
// settling the prefix first unsettled tags (none if prefix is 0; a plain
// ack if it is 1), then singles one by one.
type ackPlan struct {
	prefix  int
	upTo    uint64
	singles []uint64
}

// planAcks plans sending acks (ascending, no duplicates) given the
// unsettled tags (ascending): the longest prefix of unsettled that acks
// settles goes in one multiple ack; any other ack is sent alone (an
// out-of-order completion, or a tag the session does not know). It returns
// unsettled without the acked tags (reusing its array) and appends the
// singles to singles.
func planAcks(unsettled, acks, singles []uint64) ([]uint64, ackPlan) {
	k := 0
	for k < len(unsettled) && k < len(acks) && unsettled[k] == acks[k] {
		k++
	}
	p := ackPlan{prefix: k}
	if k > 0 {
		p.upTo = unsettled[k-1]
	}
	rest, j := unsettled[:0], k
	for _, tag := range unsettled[k:] {
		for j < len(acks) && acks[j] < tag {
			singles = append(singles, acks[j])
			j++
		}
		if j < len(acks) && acks[j] == tag {
			singles = append(singles, tag)
			j++
			continue
		}
		rest = append(rest, tag)
	}
	p.singles = append(singles, acks[j:]...)
	return rest, p
}

// removeTag removes tag from the ascending tags, if there.
func removeTag(tags []uint64, tag uint64) []uint64 {
	if i, ok := slices.BinarySearch(tags, tag); ok {
		return slices.Delete(tags, i, i+1)
	}
	return tags
}

// result is the error the session ended with, for Closed.
func (st *runState) result() error {
	if st.closeErr == nil && !st.requested {
		// The channel went away without an error we saw (amqp091-go reports
		// none when our own Close after a failed ack wins the race with the
		// connection's shutdown): still a failure to the owner.
		return classify("channel closed", fmt.Errorf("%w: channel closed unexpectedly", ErrClosed))
	}
	if st.closeErr != nil {
		return classify("channel closed", st.closeErr)
	}
	return nil
}

// apply performs one op. An error means the channel is unusable: it is
// closed, and its close notification ends the loop.
func (c *Session) apply(o op) error {
	var err error
	switch o.kind {
	case opNack:
		err = c.ch.Nack(o.tag, false, o.requeue)
	case opReject:
		err = c.ch.Reject(o.tag, o.requeue)
	case opCancel:
		err = c.ch.Cancel(c.tag, false)
	case opClose:
		_ = c.ch.Close()
		return nil
	}
	if err != nil {
		go func() { _ = c.ch.Close() }()
	}
	return err
}

// Consumer is the old name of Session.
//
// Deprecated: use Session ("consumer" now means only the route's actor).
type Consumer = Session

// ConsumerConfig is the old name of SessionConfig.
//
// Deprecated: use SessionConfig.
type ConsumerConfig = SessionConfig

// StartConsumer is the old name of StartSession.
//
// Deprecated: use StartSession.
func StartConsumer(ch *amqp.Channel, cfg SessionConfig) (*Session, amqp.Queue, error) {
	return StartSession(ch, cfg)
}

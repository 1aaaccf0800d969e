package broker

import (
	"fmt"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
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

// Consumer is one channel consuming one queue. It is the channel's only
// owner: every AMQP call on the channel (qos, declarations, consume, acks,
// cancel, close) happens on its goroutine, so acks from any goroutine are
// safe and never block the caller. The acks it finds queued together are
// coalesced: one multiple ack over the contiguous run of the oldest
// unsettled deliveries they settle (never past one that is not acked), the
// others one by one. Acks after the session ended are
// dropped: the broker has already requeued those deliveries, and a delivery
// tag never reaches any other channel.
type Consumer struct {
	ch  *amqp.Channel
	cfg ConsumerConfig

	mu      sync.Mutex
	ops     []op
	signal  chan struct{}
	stopped bool // no more ops accepted

	st runState // the session goroutine's alone
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

// Delivery is a message received by a Consumer. Settle it exactly once with
// Ack, Nack or Reject; they never block.
//
// A Delivery built outside a Consumer (a test's fake session) is settled
// through its amqp.Delivery's Acknowledger instead.
type Delivery struct {
	amqp.Delivery
	session *Consumer
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

// StartConsumer sets ch up (QoS, topology, basic.consume) and starts the
// session goroutine. It blocks on broker round trips: call it off any actor's
// mailbox. On error ch is closed and no callback is ever called.
func StartConsumer(ch *amqp.Channel, cfg ConsumerConfig) (*Consumer, amqp.Queue, error) {
	fail := func(err error) (*Consumer, amqp.Queue, error) {
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
	c := &Consumer{ch: ch, cfg: cfg, signal: make(chan struct{}, 1)}
	go c.run(deliveries, closes, cancels)
	return c, q, nil
}

// Cancel stops deliveries (basic.cancel) but keeps the channel open so
// deliveries in hand can still be settled. Non-blocking.
func (c *Consumer) Cancel() { c.enqueue(op{kind: opCancel}) }

// Close closes the channel; the broker requeues every unsettled delivery.
// Non-blocking; Closed is called when the channel is gone. Settlements
// enqueued before Close are sent first.
func (c *Consumer) Close() { c.enqueue(op{kind: opClose}) }

func (c *Consumer) enqueue(o op) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.ops = append(c.ops, o)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (c *Consumer) takeOps(buf []op) []op {
	c.mu.Lock()
	buf = append(buf[:0], c.ops...)
	c.ops = c.ops[:0]
	c.mu.Unlock()
	return buf
}

func (c *Consumer) stop() {
	c.mu.Lock()
	c.stopped = true
	c.ops = nil
	c.mu.Unlock()
}

// runState is the session loop's state.
type runState struct {
	// The channels amqp091-go feeds, each nil once it closed.
	deliveries <-chan amqp.Delivery
	closes     <-chan *amqp.Error
	cancels    <-chan string
	tag        string // of the broker's cancel, for evCancel

	closeErr  error
	closing   bool
	requested bool // the owner asked for the close
	buf       []op
	// unsettled holds the tags of the deliveries handed to the owner and not
	// settled yet, ascending; acks holds the acks of the batch being applied
	// (see flushAcks).
	unsettled []uint64
	acks      []uint64
	singles   []uint64
}

// event is what the session loop woke up for (see wait).
type event int

const (
	evNone     event = iota // a notification channel closed, or the channel's error came
	evDelivery              // a delivery, written where wait was told
	evCancel                // the broker cancelled the consumer (st.tag)
	evOps                   // the owner queued ops
)

// run is the session's goroutine. An idle route's session spends its life
// parked in wait, so the stack it holds there is kept small (about 0.9 KiB
// instead of 1.3: the loop's state lives in the Consumer, the select in
// wait, which receives the delivery straight into the heap Delivery it
// hands to the owner): the runtime starts new goroutines with the average
// stack in use plus a guard, rounded up to a power of two, so sessions
// that use little let the next goroutines start at 2 KiB rather than 4.
func (c *Consumer) run(deliveries <-chan amqp.Delivery, closes <-chan *amqp.Error, cancels <-chan string) {
	st := &c.st // in the Consumer, not in this frame
	st.deliveries, st.closes, st.cancels = deliveries, closes, cancels
	next := &Delivery{session: c}
	for st.closes != nil || st.deliveries != nil {
		switch st.wait(c.signal, &next.Delivery) {
		case evDelivery:
			next = c.deliver(st, next)
		case evCancel:
			c.cancelled(st, st.tag)
		case evOps:
			c.applyOps(st)
		}
	}
	c.finish(st)
}

// wait blocks for the session's next event; a delivery is written into
// into.
func (st *runState) wait(signal <-chan struct{}, into *amqp.Delivery) event {
	select {
	case d, ok := <-st.deliveries:
		if !ok {
			st.deliveries = nil
			return evNone
		}
		*into = d
		return evDelivery
	case e, ok := <-st.closes:
		if !ok {
			st.closes = nil
			return evNone
		}
		st.fail(e)
		return evNone
	case tag, ok := <-st.cancels:
		if !ok {
			st.cancels = nil
			return evNone
		}
		st.tag = tag
		return evCancel
	case <-signal:
		return evOps
	}
}

// deliver hands d to the owner unless the session is closing, and returns
// the Delivery to receive the next one into.
func (c *Consumer) deliver(st *runState, d *Delivery) *Delivery {
	if st.closing {
		return d // dropped: the broker requeues it
	}
	st.unsettled = append(st.unsettled, d.DeliveryTag)
	c.cfg.Deliver(d)
	return &Delivery{session: c}
}

// finish ends the session once amqp091-go closed its channels.
func (c *Consumer) finish(st *runState) {
	// Drain a cancel notification amqp091-go may still hold.
	if cancels := st.cancels; cancels != nil {
		go func() {
			for range cancels {
			}
		}()
	}
	c.stop()
	c.cfg.Closed(st.result())
}

// fail records the first error that closes the channel.
func (st *runState) fail(err error) {
	if err != nil && st.closeErr == nil {
		st.closeErr = err
	}
}

// cancelled handles the broker cancelling the consumer: the channel is
// closed, and its close notification ends the loop.
func (c *Consumer) cancelled(st *runState, tag string) {
	if st.closing {
		return
	}
	st.closeErr = fmt.Errorf("consumer %q: %w", tag, ErrConsumerCancelled)
	st.closing = true
	go func() { _ = c.ch.Close() }()
}

// applyOps performs the owner's queued acks, nacks and closes, up to the
// first that closes the channel. The batch's acks are coalesced (see
// flushAcks) and sent after its nacks and rejects, before a close.
func (c *Consumer) applyOps(st *runState) {
	if st.closing {
		return
	}
	st.buf = c.takeOps(st.buf)
	for _, o := range st.buf {
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
func (c *Consumer) flushAcks(st *runState) bool {
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

func (c *Consumer) ackTag(tag uint64, multiple bool) error {
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
func (c *Consumer) apply(o op) error {
	var err error
	switch o.kind {
	case opNack:
		err = c.ch.Nack(o.tag, false, o.requeue)
	case opReject:
		err = c.ch.Reject(o.tag, o.requeue)
	case opCancel:
		err = c.ch.Cancel(c.cfg.Tag, false)
	case opClose:
		_ = c.ch.Close()
		return nil
	}
	if err != nil {
		go func() { _ = c.ch.Close() }()
	}
	return err
}

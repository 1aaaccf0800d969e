package broker

import (
	"fmt"
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
// safe, ordered, and never block the caller. Acks after the session ended are
// dropped: the broker has already requeued those deliveries, and a delivery
// tag never reaches any other channel.
type Consumer struct {
	ch  *amqp.Channel
	cfg ConsumerConfig

	mu      sync.Mutex
	ops     []op
	signal  chan struct{}
	stopped bool // no more ops accepted
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
	closeErr  error
	closing   bool
	requested bool // the owner asked for the close
	buf       []op
}

func (c *Consumer) run(deliveries <-chan amqp.Delivery, closes <-chan *amqp.Error, cancels <-chan string) {
	var st runState
	for closes != nil || deliveries != nil {
		select {
		case d, ok := <-deliveries:
			if !ok {
				deliveries = nil
				continue
			}
			if !st.closing {
				c.cfg.Deliver(&Delivery{Delivery: d, session: c})
			}
		case e, ok := <-closes:
			if !ok {
				closes = nil
				continue
			}
			st.fail(e)
		case tag, ok := <-cancels:
			if !ok {
				cancels = nil
				continue
			}
			c.cancelled(&st, tag)
		case <-c.signal:
			c.applyOps(&st)
		}
	}
	// Drain a cancel notification amqp091-go may still hold.
	if cancels != nil {
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
// first that closes the channel.
func (c *Consumer) applyOps(st *runState) {
	if st.closing {
		return
	}
	st.buf = c.takeOps(st.buf)
	for _, o := range st.buf {
		if o.kind == opClose {
			st.requested = true
		}
		if err := c.apply(o); err != nil || o.kind == opClose {
			if err != nil {
				st.fail(err)
			}
			st.closing = true
			return
		}
	}
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
	case opAck:
		err = c.ch.Ack(o.tag, false)
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

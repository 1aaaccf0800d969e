package hatotest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// Broker is an in-memory message broker with RabbitMQ's semantics where a
// hato service depends on them: topic exchanges (amq.topic exists, others
// are created when a route declares them), durable queues declared and
// bound exactly as hato declares them on RabbitMQ, the default exchange
// (routing to the queue named by the routing key; dead-letter copies go
// that way), mandatory publishes (an unroutable one fails with
// broker.ErrUnroutable), per-consumer prefetch, acks, nacks and rejects.
// Several services may share one Broker, as they would share RabbitMQ: a
// competing route's queue is shared by every instance of its service (each
// message handled once), a non-competing route gets a queue per instance
// (each instance gets every message).
//
// Where RabbitMQ leaves a choice, the Broker makes it deterministic:
//
//   - A queue with several consumers hands out its messages round-robin,
//     skipping consumers whose prefetch is full.
//   - A requeued message (a nack or reject with requeue, or an unsettled
//     delivery of a closed session) goes back to its original position in
//     its queue, marked redelivered: RabbitMQ does the same "when
//     possible". A quorum queue's deliveries carry x-delivery-count.
//   - A nacked or rejected message that is not requeued is discarded: hato
//     declares no x-dead-letter-exchange, it dead-letters by publishing a
//     copy itself.
//   - Queues never expire (x-expires is ignored) and nothing is lost on a
//     "restart": there is none.
//   - The delay queues of delayed retries (hato's FailurePolicy.RetryDelays)
//     are modelled: each message waits the queue's delay, then goes back
//     to the route's queue with an x-death header, as RabbitMQ's message
//     TTL and dead-lettering do. WaitIdle waits for them.
//
// A Broker is safe for concurrent use. The zero value is not usable: call
// NewBroker.
type Broker struct {
	mu        sync.Mutex
	exchanges map[string]bool
	queues    map[string]*queue
	bindings  map[string][]binding // by exchange
	seq       uint64               // publish order: requeued messages keep their place
	published []Message
	outcomes  []Outcome
	changed   chan struct{} // closed and replaced on every change (see WaitIdle)
	delayed   int           // messages waiting in delay queues (delay.go)
}

type binding struct{ key, queue string }

// NewBroker returns an empty in-memory broker: only the exchange amq.topic
// exists.
func NewBroker() *Broker {
	return &Broker{
		exchanges: map[string]bool{broker.DefaultExchange: true},
		queues:    map[string]*queue{},
		bindings:  map[string][]binding{},
		changed:   make(chan struct{}),
	}
}

// message is one message in a queue, or delivered from it.
type message struct {
	seq         uint64
	exchange    string
	routingKey  string
	pub         amqp.Publishing
	redelivered bool
	deliveries  int // how often it was delivered (quorum queues count them)
}

type queue struct {
	name      string
	quorum    bool
	ready     []*message // ordered by seq
	consumers []*session
	next      int    // round-robin position among consumers
	consumed  bool   // some session consumed from it (see WaitIdle)
	delay     *delay // a delay queue of delayed retries (delay.go)
}

// notify wakes WaitIdle callers. Called with b.mu held.
func (b *Broker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// declare declares t as broker.Topology.Declare does on RabbitMQ. Called
// with b.mu held.
func (b *Broker) declare(t broker.Topology) (*queue, error) {
	b.exchanges[t.ExchangeName()] = true
	q, err := b.declareQueue(t.Queue, t.QueueType)
	if err != nil {
		return nil, err
	}
	if t.MaxConsumers > 0 && q.active() >= t.MaxConsumers {
		return nil, fmt.Errorf("queue %q has %d consumers: %w", t.Queue, q.active(), broker.ErrTooManyConsumers)
	}
	bd := binding{key: t.BindingKey, queue: t.Queue}
	if !slices.Contains(b.bindings[t.ExchangeName()], bd) {
		b.bindings[t.ExchangeName()] = append(b.bindings[t.ExchangeName()], bd)
	}
	if t.DeadLetterQueue != "" {
		if _, err := b.declareQueue(t.DeadLetterQueue, t.QueueType); err != nil {
			return nil, err
		}
	}
	if err := b.declareRetryQueues(t); err != nil { // delay queues (delay.go)
		return nil, err
	}
	return q, nil
}

// declareQueue declares a queue, or checks an existing one has the same
// type (RabbitMQ refuses a declaration with other arguments).
func (b *Broker) declareQueue(name string, typ broker.QueueType) (*queue, error) {
	quorum := typ == broker.Quorum
	if q := b.queues[name]; q != nil {
		if q.quorum != quorum {
			return nil, fmt.Errorf("declare queue %q: inequivalent x-queue-type: %w", name, broker.ErrPreconditionFailed)
		}
		return q, nil
	}
	q := &queue{name: name, quorum: quorum}
	b.queues[name] = q
	return q, nil
}

// route delivers a publish to the queues it matches. It returns how many
// took it, or an error for an exchange that does not exist. Called with
// b.mu held.
func (b *Broker) route(exchange, routingKey string, pub amqp.Publishing) (int, error) {
	var targets []*queue
	if exchange == "" {
		if q := b.queues[routingKey]; q != nil {
			targets = append(targets, q)
		}
	} else {
		if !b.exchanges[exchange] {
			return 0, fmt.Errorf("publish to exchange %q: %w", exchange, broker.ErrExchangeNotFound)
		}
		for _, bd := range b.bindings[exchange] {
			q := b.queues[bd.queue]
			if q != nil && !slices.Contains(targets, q) && topicMatch(bd.key, routingKey) {
				targets = append(targets, q)
			}
		}
	}
	for _, q := range targets {
		b.seq++
		m := &message{seq: b.seq, exchange: exchange, routingKey: routingKey, pub: pub}
		q.ready = append(q.ready, m)
		if q.delay != nil {
			b.expireLater(q, m) // delay.go
		}
		b.dispatch(q)
	}
	if len(targets) > 0 {
		b.notify()
	}
	return len(targets), nil
}

// publish routes r and finishes it, as a broker confirm would: nil, or
// ErrUnroutable for a mandatory message no queue took.
func (b *Broker) publish(r *broker.Request) {
	if r.Finished() {
		return
	}
	b.mu.Lock()
	if r.Exchange != "" {
		b.published = append(b.published, newMessage(r.Exchange, r.RoutingKey, r.Msg))
	}
	n, err := b.route(r.Exchange, r.RoutingKey, r.Msg)
	b.mu.Unlock()
	if err == nil && n == 0 && r.Mandatory {
		err = &broker.ReturnError{Code: amqp.NoRoute, Text: "NO_ROUTE", Exchange: r.Exchange, RoutingKey: r.RoutingKey}
	}
	r.Finish(err)
}

// dispatch hands ready messages to consumers with room, round-robin.
// Called with b.mu held; deliveries are sent to the consumer actors'
// mailboxes, so nothing runs a handler under the lock.
func (b *Broker) dispatch(q *queue) {
	for len(q.ready) > 0 {
		s := q.nextConsumer()
		if s == nil {
			return
		}
		m := q.ready[0]
		q.ready[0] = nil
		q.ready = q.ready[1:]
		s.deliver(m)
	}
}

// nextConsumer is the next consumer, round-robin, with room for a
// delivery; nil when none has.
func (q *queue) nextConsumer() *session {
	for i := range q.consumers {
		s := q.consumers[(q.next+i)%len(q.consumers)]
		if s.hasRoom() {
			q.next = (q.next + i + 1) % len(q.consumers)
			return s
		}
	}
	return nil
}

// requeue puts m back at its original position, marked redelivered.
func (q *queue) requeue(m *message) {
	m.redelivered = true
	i, _ := slices.BinarySearchFunc(q.ready, m.seq, func(x *message, seq uint64) int {
		return cmpUint(x.seq, seq)
	})
	q.ready = slices.Insert(q.ready, i, m)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// idle reports whether nothing is in flight: no delivery unsettled, and no
// message waiting in a queue some session consumed from. Called with b.mu
// held.
func (b *Broker) idle() bool {
	if b.delayed > 0 {
		return false // delayed retries wait (delay.go)
	}
	for _, q := range b.queues {
		if q.consumed && len(q.ready) > 0 {
			return false
		}
		for _, s := range q.consumers {
			if len(s.unacked) > 0 {
				return false
			}
		}
	}
	return true
}

// WaitIdle blocks until the broker is idle, or ctx ends (its error is
// returned). Idle means every delivery was settled (acked, rejected or
// requeued and delivered again) and no message waits in a queue that a
// route consumes, or consumed: what a service is still retrying, holding
// for a retry backoff, or will get again after a handler panic restarted
// its route, keeps the broker busy. Messages in queues nothing ever
// consumed (dead-letter queues) do not. Call it after publishing, then
// assert: no sleeping.
//
// A route of a stopped service leaves what its queue still holds there,
// so WaitIdle waits for ctx then. A dead-letter delivery event
// (hato.WithDeliveryEvents) is reported before its message is acked, so
// it is there when WaitIdle returns; a Drop event is reported just after
// the ack and may come a moment later: wait for it by polling.
func (b *Broker) WaitIdle(ctx context.Context) error {
	for {
		b.mu.Lock()
		idle, changed := b.idle(), b.changed
		b.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("hatotest: broker not idle: %w", ctx.Err())
		}
	}
}

package hatotest

import (
	"bytes"
	"fmt"
	"maps"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/transport"
)

// session is one consumer on one queue: what a channel consuming a queue
// is on RabbitMQ. It is the deliveries' amqp.Acknowledger, so hato settles
// them here. Delivery tags are its own, from 1; a settlement after the
// session ended is ignored (hato drops those too: the message was
// requeued). A settlement of a tag the session does not hold (settled
// already, or never delivered) fails the session as RabbitMQ fails the
// channel: 406 PRECONDITION_FAILED, every unsettled delivery requeued.
type session struct {
	b         *Broker
	q         *queue
	cfg       broker.SessionConfig
	tag       string
	nextTag   uint64
	unacked   map[uint64]*message
	cancelled bool
	closed    bool
}

var _ transport.Session = (*session)(nil)

// startSession declares cfg's topology and starts consuming, as
// broker.StartSession does on a channel.
func (b *Broker) startSession(cfg broker.SessionConfig) (transport.Session, amqp.Queue, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, err := b.declare(cfg.Topology)
	if err != nil {
		return nil, amqp.Queue{}, err
	}
	info := amqp.Queue{Name: q.name, Messages: len(q.ready), Consumers: q.active()}
	s := &session{b: b, q: q, cfg: cfg, tag: cfg.Tag, unacked: map[uint64]*message{}}
	if s.tag == "" {
		s.tag = "hatotest-" + broker.RandomID()
	}
	q.consumers = append(q.consumers, s)
	q.consumed = true
	b.dispatch(q)
	b.notify()
	return s, info, nil
}

// active counts the queue's consumers that take deliveries.
func (q *queue) active() int {
	n := 0
	for _, s := range q.consumers {
		if !s.cancelled {
			n++
		}
	}
	return n
}

func (s *session) hasRoom() bool {
	return !s.cancelled && (s.cfg.Prefetch <= 0 || len(s.unacked) < s.cfg.Prefetch)
}

// deliver hands m to the consumer. Called with b.mu held.
func (s *session) deliver(m *message) {
	s.nextTag++
	s.unacked[s.nextTag] = m
	m.deliveries++
	p := m.pub
	// Each delivery has its own headers and body, as when decoded off the
	// wire: a handler that changes them changes no other delivery.
	headers := maps.Clone(p.Headers)
	if s.q.quorum && m.deliveries > 1 {
		if headers == nil {
			headers = amqp.Table{}
		}
		headers["x-delivery-count"] = int64(m.deliveries - 1)
	}
	s.cfg.Deliver(&broker.Delivery{Delivery: amqp.Delivery{
		Acknowledger: s, DeliveryTag: s.nextTag, ConsumerTag: s.tag, Redelivered: m.redelivered,
		Exchange: m.exchange, RoutingKey: m.routingKey,
		Headers: headers, ContentType: p.ContentType, ContentEncoding: p.ContentEncoding,
		DeliveryMode: p.DeliveryMode, Priority: p.Priority, CorrelationId: p.CorrelationId,
		ReplyTo: p.ReplyTo, Expiration: p.Expiration, MessageId: p.MessageId, Timestamp: p.Timestamp,
		Type: p.Type, UserId: p.UserId, AppId: p.AppId, Body: bytes.Clone(p.Body),
	}})
}

// settle ends delivery tag: acked, requeued, or discarded.
func (s *session) settle(tag uint64, requeue bool, action Settlement) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return
	}
	m := s.unacked[tag]
	if m == nil {
		s.fail(&amqp.Error{Code: amqp.PreconditionFailed, Server: true,
			Reason: fmt.Sprintf("PRECONDITION_FAILED - unknown delivery tag %d", tag)})
		return
	}
	delete(s.unacked, tag)
	s.b.outcomes = append(s.b.outcomes, Outcome{
		Queue: s.q.name, RoutingKey: m.routingKey, MessageID: m.pub.MessageId,
		Redelivered: m.redelivered, Settlement: action,
	})
	if requeue {
		s.q.requeue(m)
	}
	s.b.dispatch(s.q)
	s.b.notify()
}

// Ack implements amqp.Acknowledger.
func (s *session) Ack(tag uint64, _ bool) error {
	s.settle(tag, false, Acked)
	return nil
}

// Nack implements amqp.Acknowledger.
func (s *session) Nack(tag uint64, _ bool, requeue bool) error {
	s.settle(tag, requeue, settlement(requeue))
	return nil
}

// Reject implements amqp.Acknowledger.
func (s *session) Reject(tag uint64, requeue bool) error {
	s.settle(tag, requeue, settlement(requeue))
	return nil
}

func settlement(requeue bool) Settlement {
	if requeue {
		return Requeued
	}
	return Discarded
}

// Alive reports whether the session was not closed, as
// broker.Session.Alive does.
func (s *session) Alive() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return !s.closed
}

// Cancel stops deliveries; deliveries in hand can still be settled.
func (s *session) Cancel() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.cancelled = true
	s.b.notify()
}

// Close ends the session: its unsettled deliveries go back to the queue,
// and Closed(nil) is reported, as after broker.Session.Close.
func (s *session) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.closed {
		return
	}
	s.end(nil)
}

// fail ends the session as a channel error does on RabbitMQ: its
// unsettled deliveries go back to the queue and Closed reports err,
// classified as broker.StartSession's sessions classify it. Called with
// b.mu held.
func (s *session) fail(err *amqp.Error) {
	s.end(fmt.Errorf("channel closed: %w: %w", broker.ErrPreconditionFailed, err))
}

// end ends the session; Closed reports err. Called with b.mu held.
func (s *session) end(err error) {
	s.closed = true
	for _, m := range s.unacked {
		s.q.requeue(m)
	}
	clear(s.unacked)
	s.q.consumers = slicesDelete(s.q.consumers, s)
	s.q.next = 0
	s.cfg.Closed(err)
	s.b.dispatch(s.q)
	s.b.notify()
}

func slicesDelete(list []*session, s *session) []*session {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	clear(list[len(out):])
	return out
}

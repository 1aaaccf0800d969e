package hato

import (
	"context"
	"fmt"
	"maps"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// publishConfig is one publish's resolved options.
type publishConfig struct {
	exchange  string
	prefix    *string
	envelope  envelope.Envelope
	mandatory bool
	transient bool
	wait      bool
	headers   amqp.Table
}

type publishOption func(*publishConfig) error

func (f publishOption) applyPublish(p *publishConfig) error { return f(p) }

// Mandatory makes a publish that matches no queue fail with ErrUnroutable
// instead of being dropped by the broker. The message then carries the
// string header x-hato-seq, by which the broker's return is matched to its
// publish; consumers can ignore it.
func Mandatory() PublishOption {
	return publishOption(func(p *publishConfig) error { p.mandatory = true; return nil })
}

// Transient publishes a non-persistent message (tomodachi's default);
// hato's default is persistent.
func Transient() PublishOption {
	return publishOption(func(p *publishConfig) error { p.transient = true; return nil })
}

// Headers sets AMQP headers on the message.
func Headers(h amqp.Table) PublishOption {
	return publishOption(func(p *publishConfig) error {
		if err := broker.ValidateHeaders(h); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
		p.headers = h
		return nil
	})
}

// WaitForConfirm makes a publish from inside a handler wait for its confirm
// like any other (by default it returns at once and the delivery is acked
// only after the confirm).
func WaitForConfirm() PublishOption {
	return publishOption(func(p *publishConfig) error { p.wait = true; return nil })
}

// Publish builds a message from data with the service's envelope (or the
// Envelope option's) and publishes it with routingKey, tomodachi's
// amqp_publish(service, data, routing_key, ...). The envelope's topic is the
// key without prefix; the message is published with the prefix (the
// service's, or the RoutingKeyPrefix option's) and the key encoded as
// tomodachi encodes it, to the service's exchange (or the Exchange option's).
// Messages are persistent and confirmed by the broker.
//
// Outside a handler, Publish returns once the broker confirmed the message,
// or with an error: never silently dropped. While the broker is unreachable
// it waits (bounded by ctx and the publish buffer) and the message is sent
// after reconnecting. If ctx ends after the message was sent, Publish
// returns ctx's error although the message may still arrive.
//
// Inside a handler (ctx is, or derives from, the handler's context), Publish
// returns as soon as the message is handed over: the handler does not wait,
// and the delivery being handled is acked only after every such publish was
// confirmed; a failed one makes the delivery fail instead.
func (s *Service) Publish(ctx context.Context, data any, routingKey string, opts ...PublishOption) error {
	if ctx == nil {
		return fmt.Errorf("%w: Publish with a nil context", ErrInvalidArgument)
	}
	m, wait, err := s.encode(data, routingKey, opts)
	if err != nil {
		return err
	}
	return s.publishMessage(ctx, m, wait)
}

// Outgoing is a message encoded exactly as Service.Publish would send it,
// for publishing later (Service.PublishEncoded), e.g. from a transactional
// outbox (github.com/hato-go/hato/outbox/pgoutbox). Its Publishing carries
// the envelope-encoded body, message id, timestamp and headers.
type Outgoing struct {
	// Exchange is where it is published.
	Exchange string
	// RoutingKey is the wire key: prefix and encoding applied.
	RoutingKey string
	// Topic is the key as given to Encode, the envelope's topic.
	Topic string
	// Mandatory: a publish that matches no queue fails with ErrUnroutable.
	Mandatory  bool
	Publishing amqp.Publishing
}

// Encode builds the message Publish(ctx, data, routingKey, opts...) would
// send, with a new message uuid, without sending it: it needs no
// connection, only the service's configuration. Errors are Publish's
// (ErrInvalidOption, ErrInvalidPayload, ErrMessageTooLarge, a bad key).
// WaitForConfirm has no effect on it.
func (s *Service) Encode(data any, routingKey string, opts ...PublishOption) (*Outgoing, error) {
	m, _, err := s.encode(data, routingKey, opts)
	return m, err
}

// PublishEncoded publishes m (from Encode, possibly stored and loaded
// since) as Publish does, outside a handler: it returns once the broker
// confirmed it, or with an error. m is not modified; the message keeps its
// id, so a consumer's Dedupe drops a copy published twice. The trace
// context injected is ctx's.
func (s *Service) PublishEncoded(ctx context.Context, m *Outgoing) error {
	if ctx == nil {
		return fmt.Errorf("%w: PublishEncoded with a nil context", ErrInvalidArgument)
	}
	if m == nil {
		return invalid("nil message")
	}
	c := *m // tracing adds headers: m's map is not written
	c.Publishing.Headers = maps.Clone(m.Publishing.Headers)
	return s.publishMessage(ctx, &c, true)
}

func (s *Service) publishMessage(ctx context.Context, m *Outgoing, wait bool) error {
	req := &broker.Request{Exchange: m.Exchange, RoutingKey: m.RoutingKey, Mandatory: m.Mandatory, Msg: m.Publishing}
	pt := s.tel.startPublish(ctx, m.Exchange, m.Topic, &req.Msg)
	return s.send(pt.ctx, req, wait, pt)
}

func (s *Service) encode(data any, routingKey string, opts []PublishOption) (*Outgoing, bool, error) {
	pc := publishConfig{exchange: s.cfg.exchange, envelope: s.cfg.envelope}
	for _, o := range opts {
		if o == nil {
			return nil, false, invalid("nil publish option")
		}
		if err := o.applyPublish(&pc); err != nil {
			return nil, false, err
		}
	}
	s.warnPublishProtoOnJSON(pc.envelope, data, routingKey)
	prefix := s.cfg.routingKeyPrefix
	if pc.prefix != nil {
		prefix = *pc.prefix
	}
	// Checked before the envelope, which carries the key as the topic.
	wireKey, err := broker.WireRoutingKey(prefix, routingKey)
	if err != nil {
		return nil, false, fmt.Errorf("hato: publish: %w", err)
	}
	now := time.Now()
	msgUUID := s.uuid + "." + envelope.NewUUID4()
	body, err := pc.envelope.Build(envelope.Build{
		Service:     envelope.Service{Name: s.name, UUID: s.uuid},
		Topic:       routingKey,
		MessageUUID: msgUUID,
		Time:        now,
	}, data, envelope.Options{})
	if err != nil {
		return nil, false, fmt.Errorf("hato: publish %q: %w: %w", routingKey, ErrInvalidPayload, err)
	}
	if len(body) > s.cfg.maxMessageSize {
		return nil, false, fmt.Errorf("hato: publish %q: %w: %d bytes encoded, the limit is %d (WithMaxMessageSize)",
			routingKey, ErrMessageTooLarge, len(body), s.cfg.maxMessageSize)
	}
	mode := amqp.Persistent
	if pc.transient {
		mode = amqp.Transient
	}
	return &Outgoing{
		Exchange:   pc.exchange,
		RoutingKey: wireKey,
		Topic:      routingKey,
		Mandatory:  pc.mandatory,
		Publishing: amqp.Publishing{
			Headers:      pc.headers,
			ContentType:  pc.envelope.ContentType(),
			DeliveryMode: mode,
			MessageId:    msgUUID,
			Timestamp:    now,
			AppId:        s.name,
			Body:         body,
		},
	}, pc.wait, nil
}

// send hands req to the connection actor and waits for its outcome, unless
// it is made from a handler and may be tracked instead.
//
// A request AMQP cannot carry fails here, at once: amqp091-go would fail
// to write it and take the connection down with it, for every publish.
//
// pt is the publish's span and measurements: it is finished with the
// outcome, exactly once.
func (s *Service) send(ctx context.Context, req *broker.Request, wait bool, pt publishTrace) error {
	if err := broker.ValidateRequest(req); err != nil {
		pt.finish(err)
		return fmt.Errorf("hato: publish: %w", err)
	}
	if err := ctx.Err(); err != nil {
		pt.finish(err)
		return err
	}
	if !wait {
		if tr := actors.TrackerFrom(ctx); tr != nil && tr.Add() {
			req.Done = func(err error) {
				s.outstanding.Delete(req)
				pt.finish(err)
				tr.Done(err)
			}
			if err := s.hand(req); err != nil {
				req.Finish(err)
				return err
			}
			pt.handed()
			return nil
		}
	}
	done := make(chan error, 1)
	req.Done = func(err error) {
		s.outstanding.Delete(req)
		pt.finish(err)
		done <- err
	}
	if err := s.hand(req); err != nil {
		pt.finish(err)
		return err
	}
	pt.handed()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("hato: publish %q: %w", req.RoutingKey, err)
		}
		return nil
	case <-ctx.Done():
		if req.Abandon(ctx.Err()) {
			return ctx.Err()
		}
		// Already sent: its confirm may still come, but the caller stops
		// waiting.
		return ctx.Err()
	}
}

// hand passes req to the connection actor unless publishing is closed:
// straight to its open publishing channel when it allows (skipping the
// actor's mailbox and goroutine), else as a Publish message. Either way it is
// remembered until its outcome, so a shutdown finishes it with ErrStopped
// whatever became of it.
func (s *Service) hand(req *broker.Request) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.current().publishingClosed() {
		return ErrStopped
	}
	conn := s.conn.Load()
	if conn == nil {
		return ErrNotStarted
	}
	s.outstanding.Store(req, struct{}{})
	s.direct.Send(s.system.Root, conn, req)
	return nil
}

package hato

import (
	"context"
	"fmt"
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
// instead of being dropped by the broker.
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
	pc := publishConfig{exchange: s.cfg.exchange, envelope: s.cfg.envelope}
	for _, o := range opts {
		if o == nil {
			return invalid("nil publish option")
		}
		if err := o.applyPublish(&pc); err != nil {
			return err
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
		return fmt.Errorf("hato: publish: %w", err)
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
		return fmt.Errorf("hato: publish %q: %w: %w", routingKey, ErrInvalidPayload, err)
	}
	if len(body) > s.cfg.maxMessageSize {
		return fmt.Errorf("hato: publish %q: %w: %d bytes encoded, the limit is %d (WithMaxMessageSize)",
			routingKey, ErrMessageTooLarge, len(body), s.cfg.maxMessageSize)
	}
	mode := amqp.Persistent
	if pc.transient {
		mode = amqp.Transient
	}
	req := &broker.Request{
		Exchange:   pc.exchange,
		RoutingKey: wireKey,
		Mandatory:  pc.mandatory,
		Msg: amqp.Publishing{
			Headers:      pc.headers,
			ContentType:  pc.envelope.ContentType(),
			DeliveryMode: mode,
			MessageId:    msgUUID,
			Timestamp:    now,
			AppId:        s.name,
			Body:         body,
		},
	}
	pt := s.tel.startPublish(ctx, pc.exchange, routingKey, &req.Msg)
	return s.send(pt.ctx, req, pc.wait, pt)
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
	if s.pubClosed {
		return ErrStopped
	}
	conn := s.conn.Load()
	if conn == nil {
		return ErrNotStarted
	}
	s.outstanding.Store(req, struct{}{})
	if s.direct.Submit(req) {
		return nil
	}
	s.system.Root.Send(conn, &actors.Publish{Req: req})
	return nil
}

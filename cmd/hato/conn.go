package main

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// session is an open connection with the URL that reached the broker.
type session struct {
	conn *amqp.Connection
	url  string
}

// connect dials the URLs of c in order and returns the first connection
// that opens; its name (shown by rabbitmqctl and the management UI) is
// "hato-cli <what>".
func connect(e *env, c *connFlags, what string) (*session, error) {
	urls, err := c.resolve(e.getenv)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range urls {
		conn, err := broker.Dial(e.ctx, broker.Config{URL: u, ConnectionName: "hato-cli " + what, DialTimeout: c.timeout})
		if err == nil {
			return &session{conn: conn, url: u}, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (s *session) close() { _ = s.conn.Close() }

// vhost is the virtual host of the connected URL.
func (s *session) vhost() string {
	uri, err := amqp.ParseURI(s.url)
	if err != nil || uri.Vhost == "" {
		return "/"
	}
	return uri.Vhost
}

// channel opens a channel.
func (s *session) channel() (*amqp.Channel, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	return ch, nil
}

// confirmer publishes with broker confirms on its own channel.
type confirmer struct {
	pub *broker.Publisher
}

func newConfirmer(s *session) (*confirmer, error) {
	ch, err := s.channel()
	if err != nil {
		return nil, err
	}
	pub, err := broker.NewPublisher(ch, broker.PublisherConfig{
		FrameMax: s.conn.Config.FrameSize,
		Closed: func(_ *broker.Publisher, err error, unfinished []*broker.Request) {
			if err == nil {
				err = broker.ErrClosed
			}
			for _, r := range unfinished {
				r.Finish(fmt.Errorf("channel closed before the confirm: %w", err))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	return &confirmer{pub: pub}, nil
}

// submit sends r; done gets its outcome exactly once.
func (c *confirmer) submit(r *broker.Request, done func(error)) {
	r.Done = done
	if err := broker.ValidateRequest(r); err != nil {
		r.Finish(err)
		return
	}
	if !c.pub.Submit(r) {
		r.Finish(broker.ErrClosed)
	}
}

// publish sends r and waits for the broker's confirm (and, when r is
// mandatory, for it to be routed), or for ctx.
func (c *confirmer) publish(ctx context.Context, r *broker.Request) error {
	done := make(chan error, 1)
	c.submit(r, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no confirm: %w", ctx.Err())
	}
}

func (c *confirmer) close() {
	c.pub.Close()
	<-c.pub.Done()
}

package hatotest

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/transport"
)

// Transport is the hato.Option that connects a service to b instead of
// RabbitMQ. The URL options (WithURL, AMQP_URL, ...) are then ignored;
// everything else works as with a broker.
func Transport(b *Broker) hato.Option {
	if b == nil {
		return transport.Option(nil).(hato.Option)
	}
	return transport.Option(memTransport{b: b}).(hato.Option)
}

// Start starts svc, failing the test if it does not start within 10 s,
// and stops it when the test ends (unless the test stopped it).
func Start(t testing.TB, svc *hato.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatalf("hatotest: start %s: %v", svc.Name(), err)
	}
	t.Cleanup(func() {
		select {
		case <-svc.Done():
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Stop(ctx); err != nil {
			t.Errorf("hatotest: stop %s: %v", svc.Name(), err)
		}
	})
}

// PublishOption configures Broker.Publish.
type PublishOption func(*publishConfig)

type publishConfig struct {
	exchange  string
	prefix    string
	env       envelope.Envelope
	sender    envelope.Service
	headers   amqp.Table
	mandatory bool
	messageID string // the message-id property; a random uuid when empty
	uuidSet   bool   // MessageUUID set messageID
}

// MessageUUID sets the message uuid (the envelope's, and the message-id
// property) instead of a random one: publish twice with one uuid to test a
// route with hato.Dedupe.
func MessageUUID(id string) PublishOption {
	return func(c *publishConfig) { c.messageID, c.uuidSet = id, true }
}

// Exchange publishes to the named exchange (default amq.topic).
func Exchange(name string) PublishOption { return func(c *publishConfig) { c.exchange = name } }

// RoutingKeyPrefix prefixes the routing key on the wire, as a service with
// hato.RoutingKeyPrefix does (the envelope's topic stays unprefixed).
func RoutingKeyPrefix(prefix string) PublishOption {
	return func(c *publishConfig) { c.prefix = prefix }
}

// Envelope builds the body with e (default envelope.JSON).
func Envelope(e envelope.Envelope) PublishOption { return func(c *publishConfig) { c.env = e } }

// Sender names the publishing service in the envelope (default "hatotest"
// with an empty uuid).
func Sender(name, uuid string) PublishOption {
	return func(c *publishConfig) { c.sender = envelope.Service{Name: name, UUID: uuid} }
}

// Headers sets AMQP headers on the message.
func Headers(h amqp.Table) PublishOption { return func(c *publishConfig) { c.headers = h } }

// Mandatory makes a publish no queue takes fail with an error matching
// broker.ErrUnroutable (hato.ErrUnroutable).
func Mandatory() PublishOption { return func(c *publishConfig) { c.mandatory = true } }

// Publish injects a message as a tomodachi node or another hato service
// would publish it: data in an envelope (JSON unless the Envelope option
// says otherwise) with routingKey as its topic, published persistent with
// the key prefixed and encoded as hato and tomodachi do. It returns once
// the message is in every queue it matches; nothing blocks. An error means
// the envelope could not be built, the exchange does not exist, or (with
// Mandatory) no queue took it.
func (b *Broker) Publish(ctx context.Context, routingKey string, data any, opts ...PublishOption) error {
	c := publishConfig{env: envelope.JSON, sender: envelope.Service{Name: "hatotest"}}
	for _, o := range opts {
		o(&c)
	}
	if !c.uuidSet {
		id := c.sender.UUID
		if id == "" {
			id = "None" // as tomodachi formats Python's None
		}
		c.messageID = id + "." + envelope.NewUUID4()
	}
	body, err := c.env.Build(envelope.Build{Service: c.sender, Topic: routingKey, MessageUUID: c.messageID}, data, envelope.Options{})
	if err != nil {
		return fmt.Errorf("hatotest: publish %q: %w", routingKey, err)
	}
	return b.publishBody(ctx, routingKey, body, c)
}

// PublishBody injects a message whose body is body as it is (no envelope
// is built): for messages a route must refuse, such as a body no envelope
// decodes. The options are Publish's, but Envelope only sets the content
// type.
func (b *Broker) PublishBody(ctx context.Context, routingKey string, body []byte, opts ...PublishOption) error {
	c := publishConfig{env: envelope.JSON}
	for _, o := range opts {
		o(&c)
	}
	return b.publishBody(ctx, routingKey, body, c)
}

func (b *Broker) publishBody(ctx context.Context, routingKey string, body []byte, c publishConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wire, err := broker.WireRoutingKey(c.prefix, routingKey)
	if err != nil {
		return fmt.Errorf("hatotest: publish: %w", err)
	}
	if c.exchange == "" {
		c.exchange = broker.DefaultExchange
	}
	if c.messageID == "" {
		c.messageID = envelope.NewUUID4()
	}
	msg := amqp.Publishing{
		Headers: c.headers, ContentType: c.env.ContentType(), DeliveryMode: amqp.Persistent,
		MessageId: c.messageID, Timestamp: time.Now(), Body: body,
	}
	b.mu.Lock()
	n, err := b.route(c.exchange, wire, msg)
	b.mu.Unlock()
	if err == nil && n == 0 && c.mandatory {
		err = &broker.ReturnError{Code: amqp.NoRoute, Text: "NO_ROUTE", Exchange: c.exchange, RoutingKey: wire}
	}
	if err != nil {
		return fmt.Errorf("hatotest: publish %q: %w", routingKey, err)
	}
	return nil
}

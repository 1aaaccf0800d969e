package hatotest

import (
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// Message is a message the Broker saw: published by a service, or waiting
// in a queue. Its envelope is decoded (untyped) when its content type names
// one of package envelope's (JSON, Protobuf, Raw); Decode decodes it into a
// type of yours.
type Message struct {
	// Exchange and RoutingKey are as published: the key prefixed and
	// encoded as on the wire ("" exchange: the default exchange, how hato
	// sends a dead-letter copy to its queue).
	Exchange   string
	RoutingKey string
	// Topic is the envelope's topic: the routing key the publisher gave,
	// without prefix. Empty when the body did not decode.
	Topic string
	// Service is the publishing service, from the envelope.
	Service envelope.Service
	// MessageUUID is the envelope's message uuid.
	MessageUUID string
	// Data is the payload, decoded untyped (as into *any: JSON objects are
	// map[string]any). Nil when the body did not decode; see DecodeErr.
	Data any
	// DecodeErr says why the body did not decode.
	DecodeErr error
	// Publishing is the AMQP message: properties, headers and body.
	Publishing amqp.Publishing
}

func newMessage(exchange, routingKey string, pub amqp.Publishing) Message {
	m := Message{Exchange: exchange, RoutingKey: routingKey, Publishing: pub}
	var data any
	parsed, err := m.Decode(&data)
	if err != nil {
		m.DecodeErr = err
		return m
	}
	m.Data, m.Topic, m.Service, m.MessageUUID = data, parsed.Metadata.Topic, parsed.Service, parsed.Metadata.MessageUUID
	return m
}

// envelopeOf picks the envelope a content type names; JSON when none does.
func envelopeOf(contentType string) envelope.Envelope {
	for _, e := range []envelope.Envelope{envelope.Protobuf, envelope.Raw, envelope.JSON} {
		if strings.HasPrefix(contentType, strings.SplitN(e.ContentType(), ";", 2)[0]) {
			return e
		}
	}
	return envelope.JSON
}

// Decode decodes the body with the envelope its content type names (JSON
// when none does) into dst, a pointer of a type that envelope supports.
func (m Message) Decode(dst any) (envelope.Message, error) {
	return envelopeOf(m.Publishing.ContentType).Parse(m.Publishing.Body, dst, envelope.Options{})
}

// Header returns the value of an AMQP header (nil when absent), such as the
// x-hato-reason of a dead-lettered message.
func (m Message) Header(name string) any { return m.Publishing.Headers[name] }

// Settlement is how a consumer settled a delivery.
type Settlement int

const (
	// Acked: acknowledged (handled, dropped, or dead-lettered: a
	// dead-lettered message is acked once its copy is in the dead-letter
	// queue).
	Acked Settlement = iota + 1
	// Requeued: nacked or rejected with requeue; it is delivered again.
	Requeued
	// Discarded: nacked or rejected without requeue.
	Discarded
)

func (s Settlement) String() string {
	switch s {
	case Acked:
		return "acked"
	case Requeued:
		return "requeued"
	case Discarded:
		return "discarded"
	}
	return "unknown"
}

// Outcome is one settled delivery.
type Outcome struct {
	Queue       string
	RoutingKey  string // as delivered: prefixed and encoded
	MessageID   string // the message-id property (hato sets the message uuid)
	Redelivered bool
	Settlement  Settlement
}

// Published returns, in order, every message services published to an
// exchange through this broker (routed or not). Dead-letter copies, which
// hato sends through the default exchange, are not here: see
// DeadLettered. Messages injected with Broker.Publish are not either.
func (b *Broker) Published() []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Message(nil), b.published...)
}

// PublishedTo returns the published messages (see Published) whose topic
// matches pattern, which may hold the wildcards * and #. A message whose
// body did not decode is matched by its routing key instead.
func (b *Broker) PublishedTo(pattern string) []Message {
	var out []Message
	for _, m := range b.Published() {
		key := m.Topic
		if m.DecodeErr != nil {
			key = broker.DecodeRoutingKey(m.RoutingKey)
		}
		if topicMatch(pattern, key) {
			out = append(out, m)
		}
	}
	return out
}

// Queue returns the messages waiting in the named queue, in order (not
// those delivered and not yet settled); nil for a queue that does not
// exist.
func (b *Broker) Queue(name string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[name]
	if q == nil {
		return nil
	}
	out := make([]Message, 0, len(q.ready))
	for _, m := range q.ready {
		out = append(out, newMessage(m.exchange, m.routingKey, m.pub))
	}
	return out
}

// DeadLettered returns the messages in a dead-letter queue (see
// hato.RouteInfo.DeadLetterQueue), in order. Each carries hato's x-hato-*
// headers: Header("x-hato-reason") says why, and Exchange and RoutingKey
// are the default exchange and the queue, as hato republished it;
// Header("x-hato-original-routing-key") is where it came from.
func (b *Broker) DeadLettered(queue string) []Message { return b.Queue(queue) }

// Outcomes returns, in order, how every delivery was settled.
func (b *Broker) Outcomes() []Outcome {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Outcome(nil), b.outcomes...)
}

// Queues returns the names of the declared queues, sorted.
func (b *Broker) Queues() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.queues))
	for name := range b.queues {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

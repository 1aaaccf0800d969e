package broker

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultExchange is tomodachi's default exchange. It is never declared.
const DefaultExchange = "amq.topic"

// QueueType selects the kind of queue declared for a route.
type QueueType string

const (
	// Classic queues are what tomodachi declares. The default.
	Classic QueueType = "classic"
	// Quorum queues are replicated and count deliveries. Their declaration
	// carries x-queue-type, so a tomodachi node cannot share them: use them
	// only for queues hato owns alone.
	Quorum QueueType = "quorum"
)

// Topology is what a route declares: its exchange, queue, binding and
// optional dead-letter queue.
type Topology struct {
	// Exchange is the topic exchange to bind to. Empty means DefaultExchange.
	Exchange string
	// BindingKey is the encoded, prefixed key (see BindingKey).
	BindingKey string
	// Queue is the queue name (see QueueName and FixedQueueName).
	Queue string
	// QueueTTL becomes the x-expires argument in milliseconds, as tomodachi
	// declares it; zero means no argument.
	QueueTTL time.Duration
	// QueueType defaults to Classic.
	QueueType QueueType
	// MaxConsumers, when positive, makes Declare fail with
	// ErrTooManyConsumers if the queue already has that many consumers
	// (tomodachi's rule for non-competing queues, which allow one).
	MaxConsumers int
	// DeadLetterQueue, when set, is declared too (durable, same queue type,
	// no expiry) so failed messages can be republished there.
	DeadLetterQueue string
	// RetryDelays, when set, are the delays of the route's delayed retries:
	// one delay queue each is declared too (see RetryQueueName, retry.go).
	RetryDelays []time.Duration
}

// ExchangeName is Exchange with the default applied.
func (t Topology) ExchangeName() string {
	if t.Exchange == "" {
		return DefaultExchange
	}
	return t.Exchange
}

// queueArgs are the queue's declaration arguments: exactly tomodachi's for a
// classic queue (x-expires only, and only when QueueTTL is set).
func (t Topology) queueArgs() amqp.Table {
	args := amqp.Table{}
	if t.QueueTTL > 0 {
		args["x-expires"] = int64(t.QueueTTL / time.Millisecond)
	}
	if t.QueueType == Quorum {
		args["x-queue-type"] = string(Quorum)
	}
	return args
}

func (t Topology) deadLetterArgs() amqp.Table {
	if t.QueueType == Quorum {
		return amqp.Table{"x-queue-type": string(Quorum)}
	}
	return nil
}

// Declare declares the topology on ch: the exchange (only when it is not
// amq.topic: type topic, durable, not auto-delete), the queue (durable, not
// exclusive, not auto-delete, QueueArgs), the binding, and the dead-letter
// queue. It blocks on broker round trips: call it off any actor's mailbox.
// A failed declaration closes ch (AMQP semantics); the error is classified
// (see Permanent).
func (t Topology) Declare(ch *amqp.Channel) (amqp.Queue, error) {
	ex := t.ExchangeName()
	if ex != DefaultExchange {
		if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
			return amqp.Queue{}, classify(fmt.Sprintf("declare exchange %q", ex), err)
		}
	}
	q, err := ch.QueueDeclare(t.Queue, true, false, false, false, t.queueArgs())
	if err != nil {
		return amqp.Queue{}, classify(fmt.Sprintf("declare queue %q", t.Queue), err)
	}
	if t.MaxConsumers > 0 && q.Consumers >= t.MaxConsumers {
		return q, fmt.Errorf("queue %q has %d consumers: %w", t.Queue, q.Consumers, ErrTooManyConsumers)
	}
	if err := ch.QueueBind(t.Queue, t.BindingKey, ex, false, nil); err != nil {
		return q, classify(fmt.Sprintf("bind queue %q to %q with %q", t.Queue, ex, t.BindingKey), err)
	}
	if t.DeadLetterQueue != "" {
		if err := t.DeclareDeadLetterQueue(ch); err != nil {
			return q, err
		}
	}
	// outage: the delay queues of delayed retries (retry.go)
	if err := t.DeclareRetryQueues(ch); err != nil {
		return q, err
	}
	return q, nil
}

// DeclareDeadLetterQueue declares the dead-letter queue alone, as Declare
// does (durable, same queue type, no expiry): a consumer declares it again
// when it went missing. It blocks on a broker round trip; a failure closes
// ch and is classified (see Permanent).
func (t Topology) DeclareDeadLetterQueue(ch *amqp.Channel) error {
	if _, err := ch.QueueDeclare(t.DeadLetterQueue, true, false, false, false, t.deadLetterArgs()); err != nil {
		return classify(fmt.Sprintf("declare dead-letter queue %q", t.DeadLetterQueue), err)
	}
	return nil
}

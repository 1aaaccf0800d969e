package hatotest

import (
	"slices"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// delay is what a delay queue of delayed retries (broker.RetryQueueName)
// does on RabbitMQ: each message waits ttl, then is dead-lettered through
// the default exchange to dlxKey, with an x-death entry. The Broker models
// it with one timer per waiting message; while one waits the broker is not
// idle (WaitIdle waits for delayed retries).
type delay struct {
	ttl    time.Duration
	dlxKey string
}

// declareRetryQueues declares t's delay queues. Called with b.mu held.
func (b *Broker) declareRetryQueues(t broker.Topology) error {
	for _, d := range t.RetryDelays {
		q, err := b.declareQueue(broker.RetryQueueName(t.Queue, d), t.QueueType)
		if err != nil {
			return err
		}
		q.delay = &delay{ttl: d, dlxKey: t.Queue}
	}
	return nil
}

// expireLater starts m's wait in the delay queue q. Called with b.mu held.
func (b *Broker) expireLater(q *queue, m *message) {
	b.delayed++
	time.AfterFunc(q.delay.ttl, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.delayed--
		i := slices.Index(q.ready, m)
		if i < 0 {
			b.notify()
			return
		}
		q.ready = slices.Delete(q.ready, i, i+1)
		pub := m.pub
		pub.Headers = withDeath(pub.Headers, q.name, m.exchange, m.routingKey)
		if _, err := b.route("", q.delay.dlxKey, pub); err != nil || b.queues[q.delay.dlxKey] == nil {
			// RabbitMQ drops a dead-lettered message no queue takes.
			b.notify()
		}
	})
}

// withDeath is h with RabbitMQ's x-death entry for an expiry in queue.
func withDeath(h amqp.Table, queue, exchange, key string) amqp.Table {
	out := make(amqp.Table, len(h)+4)
	for k, v := range h {
		out[k] = v
	}
	out["x-death"] = []any{amqp.Table{
		"queue": queue, "reason": "expired", "count": int64(1), "exchange": exchange,
		"routing-keys": []any{key}, "time": time.Now(),
	}}
	out["x-first-death-queue"] = queue
	out["x-first-death-reason"] = "expired"
	out["x-first-death-exchange"] = exchange
	return out
}

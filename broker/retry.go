package broker

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// RetryQueueName is the delay queue of queue for delay: "<queue>.retry.<delay>"
// with the delay as Go writes a duration ("5s", "1m30s").
func RetryQueueName(queue string, delay time.Duration) string {
	return queue + ".retry." + delay.String()
}

// RetryQueueExpiry is a delay queue's x-expires: a week, or three times its
// delay if more. An unused delay queue (no longer in any route's
// RetryDelays) is deleted that long after it was last declared; a route
// declares its delay queues on every session start and again every
// RetryQueueExpiry/3, so a queue in use outlives the delay of every message
// it holds by at least twice the delay.
func RetryQueueExpiry(delay time.Duration) time.Duration {
	return max(7*24*time.Hour, 3*delay)
}

// retryArgs: each message waits delay, then is dead-lettered through the
// default exchange back to queue.
func (t Topology) retryArgs(delay time.Duration) amqp.Table {
	args := amqp.Table{
		"x-message-ttl":             int64(delay / time.Millisecond),
		"x-expires":                 int64(RetryQueueExpiry(delay) / time.Millisecond),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": t.Queue,
	}
	if t.QueueType == Quorum {
		args["x-queue-type"] = string(Quorum)
	}
	return args
}

// DeclareRetryQueues declares the topology's delay queues (see
// Topology.RetryDelays): durable, of the queue's type. It blocks on broker
// round trips; a failure closes ch and is classified (see Permanent).
func (t Topology) DeclareRetryQueues(ch *amqp.Channel) error {
	for _, d := range t.RetryDelays {
		name := RetryQueueName(t.Queue, d)
		if _, err := ch.QueueDeclare(name, true, false, false, false, t.retryArgs(d)); err != nil {
			return classify(fmt.Sprintf("declare delay queue %q", name), err)
		}
	}
	return nil
}

package brokertest

import (
	"errors"
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrQueueNotFound is returned (wrapped) by InspectQueue when the queue does
// not exist.
var ErrQueueNotFound = errors.New("queue not found")

// InspectQueue reports the number of ready messages and of consumers of
// queue in conn's vhost using a passive declare on a fresh channel (about a
// millisecond, much cheaper than rabbitmqctl). The channel is always
// released: a passive declare of a missing queue makes the server close the
// channel (404), which is reported as ErrQueueNotFound; conn stays usable.
//
// Note that "messages" here is the AMQP message count, i.e. messages READY
// for delivery; unacknowledged deliveries are not included (use FindQueue
// for MessagesUnacknowledged).
func InspectQueue(conn *amqp.Connection, queue string) (messages, consumers int, err error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, 0, fmt.Errorf("inspect %q: open channel: %w", queue, err)
	}
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		// The server has closed the channel; Close only releases it locally.
		_ = ch.Close()
		var aerr *amqp.Error
		if errors.As(err, &aerr) && aerr.Code == amqp.NotFound {
			return 0, 0, fmt.Errorf("inspect %q: %w (%w)", queue, ErrQueueNotFound, err)
		}
		return 0, 0, fmt.Errorf("inspect %q: %w", queue, err)
	}
	if err := ch.Close(); err != nil {
		return 0, 0, fmt.Errorf("inspect %q: close channel: %w", queue, err)
	}
	return q.Messages, q.Consumers, nil
}

// Inspect is InspectQueue for tests: it fails the test if the queue does not
// exist or the broker cannot be asked.
func Inspect(t testing.TB, conn *amqp.Connection, queue string) (messages, consumers int) {
	t.Helper()
	messages, consumers, err := InspectQueue(conn, queue)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return messages, consumers
}

// QueueExists reports whether queue exists in conn's vhost (passive declare
// on a fresh channel). Errors other than "not found" fail the test.
func QueueExists(t testing.TB, conn *amqp.Connection, queue string) bool {
	t.Helper()
	_, _, err := InspectQueue(conn, queue)
	if errors.Is(err, ErrQueueNotFound) {
		return false
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return true
}

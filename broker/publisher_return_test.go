//go:build integration

package broker

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defect 11: returns are matched to the publish they belong to, not by
// message id: mandatory publishes sharing one id, some unroutable, each get
// their own outcome.
func TestPublisherMatchesReturnsPerPublishNotByMessageID(t *testing.T) {
	conn := dial(t, "broker-test-returns")
	q, err := channel(t, conn).QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(channel(t, conn), PublisherConfig{MaxInFlight: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)

	const pairs = 100
	type outcome struct {
		routable bool
		err      error
	}
	outcomes := make(chan outcome, 2*pairs)
	req := func(exchange, key string, routable bool) *Request {
		return &Request{
			Exchange: exchange, RoutingKey: key, Mandatory: true,
			Msg:  amqp.Publishing{MessageId: "same-id", Body: []byte("x")},
			Done: func(err error) { outcomes <- outcome{routable, err} },
		}
	}
	p.SetPaused(true)
	for range pairs {
		p.Submit(req("amq.topic", "no.such.binding", false), req("", q.Name, true))
	}
	p.SetPaused(false)

	var wrong int
	var first error
	for range 2 * pairs {
		select {
		case o := <-outcomes:
			if o.routable == (o.err == nil) && (o.routable || errors.Is(o.err, ErrUnroutable)) {
				continue
			}
			wrong++
			if first == nil {
				first = o.err
				if first == nil {
					first = errors.New("<nil>")
				}
			}
		case <-time.After(15 * time.Second):
			t.Fatal("publishes without an outcome")
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d mandatory publishes sharing a message id got another's outcome (first: %v)", wrong, 2*pairs, first)
	}
}

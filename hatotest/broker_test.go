package hatotest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// consumer records what a session delivers.
type consumer struct {
	mu     sync.Mutex
	got    []*broker.Delivery
	closed int
	err    error // Closed's
}

func (c *consumer) deliver(d *broker.Delivery) {
	c.mu.Lock()
	c.got = append(c.got, d)
	c.mu.Unlock()
}

func (c *consumer) bodies() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, d := range c.got {
		out = append(out, fmt.Sprintf("%s/%v", d.Body, d.Redelivered))
	}
	return out
}

func (c *consumer) last() *broker.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[len(c.got)-1]
}

func startConsumer(t *testing.T, b *Broker, queue string, prefetch int) (*session, *consumer) {
	t.Helper()
	c := &consumer{}
	s, _, err := b.startSession(broker.SessionConfig{
		Topology: broker.Topology{Queue: queue, BindingKey: "k.#"},
		Prefetch: prefetch,
		Deliver:  c.deliver,
		Closed: func(err error) {
			c.mu.Lock()
			c.closed++
			c.err = err
			c.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.(*session), c
}

func publishBodies(t *testing.T, b *Broker, bodies ...string) {
	t.Helper()
	for _, body := range bodies {
		if err := b.PublishBody(context.Background(), "k."+body, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoundRobinAndPrefetch(t *testing.T) {
	b := NewBroker()
	_, c1 := startConsumer(t, b, "q", 2)
	_, c2 := startConsumer(t, b, "q", 2)
	publishBodies(t, b, "1", "2", "3", "4", "5", "6")
	if got, want := c1.bodies(), []string{"1/false", "3/false"}; !slices.Equal(got, want) {
		t.Errorf("first consumer got %v, want %v", got, want)
	}
	if got, want := c2.bodies(), []string{"2/false", "4/false"}; !slices.Equal(got, want) {
		t.Errorf("second consumer got %v, want %v (prefetch 2 each)", got, want)
	}
	if n := len(b.Queue("q")); n != 2 {
		t.Errorf("%d messages wait, want 2", n)
	}
	c1.last().Ack()
	if got := c1.bodies(); len(got) != 3 || got[2] != "5/false" {
		t.Errorf("after an ack the first consumer got %v, want 5 next", got)
	}
}

// A requeued message goes back to its original position, redelivered.
func TestRequeueKeepsPosition(t *testing.T) {
	b := NewBroker()
	s, c := startConsumer(t, b, "q", 1)
	publishBodies(t, b, "1", "2", "3")
	c.last().Nack(true)
	if got, want := c.bodies(), []string{"1/false", "1/true"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	c.last().Ack()
	c.last().Reject(false)
	s.Close()
	if c.closed != 1 {
		t.Errorf("Closed called %d times, want 1", c.closed)
	}
	if got := b.Queue("q"); len(got) != 1 || string(got[0].Publishing.Body) != "3" {
		t.Errorf("after closing with 3 unsettled the queue holds %v, want [3]", got)
	}
	var settled []string
	for _, o := range b.Outcomes() {
		settled = append(settled, o.Settlement.String())
	}
	if want := []string{"requeued", "acked", "discarded"}; !slices.Equal(settled, want) {
		t.Errorf("outcomes %v, want %v", settled, want)
	}
	// A settlement after the session ended is ignored, as hato's sessions
	// drop them.
	c.last().Ack()
	if n := len(b.Outcomes()); n != 3 {
		t.Errorf("%d outcomes after a late ack, want 3", n)
	}
}

func TestMandatoryAndMissingExchange(t *testing.T) {
	b := NewBroker()
	ctx := context.Background()
	if err := b.Publish(ctx, "nobody", 1); err != nil {
		t.Errorf("non-mandatory publish to no queue: %v, want nil (dropped)", err)
	}
	if err := b.Publish(ctx, "nobody", 1, Mandatory()); !errors.Is(err, broker.ErrUnroutable) {
		t.Errorf("mandatory publish to no queue: %v, want ErrUnroutable", err)
	}
	if err := b.Publish(ctx, "k", 1, Exchange("missing")); !errors.Is(err, broker.ErrExchangeNotFound) {
		t.Errorf("publish to a missing exchange: %v, want ErrExchangeNotFound", err)
	}
	req := &broker.Request{Exchange: "", RoutingKey: "no-such-queue", Mandatory: true, Msg: amqp.Publishing{Body: []byte("x")}}
	var got error
	req.Done = func(err error) { got = err }
	b.publish(req)
	if !errors.Is(got, broker.ErrUnroutable) {
		t.Errorf("default-exchange publish to a missing queue: %v, want ErrUnroutable", got)
	}
}

func TestQueueDeclarations(t *testing.T) {
	b := NewBroker()
	ok := func(t broker.Topology) error {
		_, _, err := b.startSession(broker.SessionConfig{Topology: t, Deliver: func(*broker.Delivery) {}, Closed: func(error) {}})
		return err
	}
	if err := ok(broker.Topology{Queue: "solo", BindingKey: "k", MaxConsumers: 1}); err != nil {
		t.Fatal(err)
	}
	if err := ok(broker.Topology{Queue: "solo", BindingKey: "k", MaxConsumers: 1}); !errors.Is(err, broker.ErrTooManyConsumers) {
		t.Errorf("second consumer of a non-competing queue: %v, want ErrTooManyConsumers", err)
	}
	if err := ok(broker.Topology{Queue: "solo", BindingKey: "k", QueueType: broker.Quorum}); !errors.Is(err, broker.ErrPreconditionFailed) {
		t.Errorf("redeclaring a classic queue as quorum: %v, want ErrPreconditionFailed", err)
	}
	if err := ok(broker.Topology{Queue: "q2", BindingKey: "k", Exchange: "custom", DeadLetterQueue: "q2.dlq"}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.Queues(), []string{"q2", "q2.dlq", "solo"}; !slices.Equal(got, want) {
		t.Errorf("queues %v, want %v", got, want)
	}
	if err := b.Publish(context.Background(), "k", 1, Exchange("custom"), Mandatory()); err != nil {
		t.Errorf("publish to the declared exchange: %v", err)
	}
}

func TestWaitIdle(t *testing.T) {
	b := NewBroker()
	_, c := startConsumer(t, b, "q", 0)
	publishBodies(t, b, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.WaitIdle(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle with a delivery unsettled: %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.WaitIdle(context.Background()) }()
	c.last().Ack()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestQuorumDeliveryCount(t *testing.T) {
	b := NewBroker()
	c := &consumer{}
	_, _, err := b.startSession(broker.SessionConfig{
		Topology: broker.Topology{Queue: "qq", BindingKey: "k.#", QueueType: broker.Quorum},
		Deliver:  c.deliver, Closed: func(error) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	publishBodies(t, b, "1")
	if _, ok := c.last().Headers["x-delivery-count"]; ok {
		t.Error("first delivery carries x-delivery-count")
	}
	c.last().Nack(true)
	if n := c.last().Headers["x-delivery-count"]; n != int64(1) {
		t.Errorf("x-delivery-count of the redelivery = %v, want 1", n)
	}
}

// A second settlement of a delivery, or one of a tag never delivered,
// fails the session as RabbitMQ fails the channel (406 PRECONDITION_FAILED,
// every unsettled delivery requeued), for each way to settle.
func TestSecondSettlementFailsTheSession(t *testing.T) {
	for _, tc := range []struct {
		name   string
		settle func(d *broker.Delivery)
	}{
		{"ack", func(d *broker.Delivery) { d.Ack() }},
		{"nack", func(d *broker.Delivery) { d.Nack(true) }},
		{"reject", func(d *broker.Delivery) { d.Reject(false) }},
		{"unknown tag", func(d *broker.Delivery) { _ = d.Acknowledger.Ack(d.DeliveryTag+100, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBroker()
			_, c := startConsumer(t, b, "q", 0)
			publishBodies(t, b, "1", "2")
			first := c.got[0]
			first.Ack()
			if tc.name == "unknown tag" {
				tc.settle(c.last())
			} else {
				tc.settle(first)
			}
			if c.closed != 1 {
				t.Fatalf("Closed called %d times, want 1", c.closed)
			}
			var ae *amqp.Error
			if !errors.As(c.err, &ae) || ae.Code != amqp.PreconditionFailed || !errors.Is(c.err, broker.ErrPreconditionFailed) {
				t.Errorf("session closed with %v, want a 406 PRECONDITION_FAILED", c.err)
			}
			if got := b.Queue("q"); len(got) != 1 || string(got[0].Publishing.Body) != "2" {
				t.Errorf("after the channel error the queue holds %v, want [2] requeued", got)
			}
			// The session is gone: a later settlement is ignored.
			c.last().Ack()
			if n := len(b.Outcomes()); n != 1 {
				t.Errorf("%d outcomes, want 1 (the first ack)", n)
			}
		})
	}
}

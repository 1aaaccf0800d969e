//go:build integration

package actors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/test/brokertest"
)

// stopHarness runs one consumer actor under a parent that ignores its
// reports, with a fake connection actor: the test answers the consumer's
// OpenChannel itself, with channels of its own connection.
type stopHarness struct {
	sys      *actor.ActorSystem
	conn     *amqp.Connection
	requests chan *OpenChannel
	consumer *actor.PID
	queue    string
	start    atomic.Pointer[sessionStarter] // replaces the session start when set
}

func newStopHarness(t *testing.T) *stopHarness {
	t.Helper()
	_, url := brokertest.NewVhost(t)
	h := &stopHarness{
		sys:      actor.NewActorSystem(),
		conn:     brokertest.Dial(t, url, "test-consumer-stop"),
		requests: make(chan *OpenChannel, 4),
		queue:    "consumer-stop-" + broker.RandomID()[:8],
	}
	t.Cleanup(h.sys.Shutdown)
	fakeConn := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if req, ok := ctx.Message().(*OpenChannel); ok {
			h.requests <- req
		}
	}))
	route := &Route{
		Name:     "stop",
		Topology: broker.Topology{Queue: h.queue, BindingKey: h.queue},
		Prefetch: 10,
		Handle: func(ctx context.Context, d *broker.Delivery) error {
			<-ctx.Done() // keeps every delivery unsettled while the actor lives
			return ctx.Err()
		},
	}
	props := ConsumerProps(ConsumerConfig{Route: route, Connection: fakeConn,
		StartSession: func(ch *amqp.Channel, cfg broker.SessionConfig) (consumerSession, amqp.Queue, error) {
			if start := h.start.Load(); start != nil {
				return (*start)(ch, cfg)
			}
			return startBrokerSession(ch, cfg)
		}})
	spawned := make(chan *actor.PID, 1)
	h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			spawned <- ctx.Spawn(props)
		}
	}))
	h.consumer = <-spawned
	return h
}

func (h *stopHarness) request(t *testing.T) *OpenChannel {
	t.Helper()
	select {
	case req := <-h.requests:
		return req
	case <-time.After(10 * time.Second):
		t.Fatal("the consumer asked for no channel")
		return nil
	}
}

func (h *stopHarness) channel(t *testing.T) *amqp.Channel {
	t.Helper()
	ch, err := h.conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func (h *stopHarness) stop(t *testing.T) {
	t.Helper()
	if err := h.sys.Root.StopFuture(h.consumer).Wait(); err != nil {
		t.Fatal(err)
	}
}

// A channel that arrives after the consumer stopped (the connection actor
// answers a request of an actor that is gone) is closed, not leaked.
func TestConsumerStoppedBeforeItsChannelArrivesClosesIt(t *testing.T) {
	h := newStopHarness(t)
	req := h.request(t)
	h.stop(t)
	ch := h.channel(t)
	h.sys.Root.Send(req.ReplyTo, &ChannelReply{Nonce: req.Nonce, Channel: ch})
	brokertest.WaitFor(t, 10*time.Second, ch.IsClosed, "the late channel closed")
}

// A consumer stopped while its session starts hands every delivery the
// session took back to the broker at once, not when the connection drops.
func TestConsumerStoppedWhileItsSessionStartsReturnsItsDeliveries(t *testing.T) {
	h := newStopHarness(t)
	setup := h.channel(t)
	if _, err := (broker.Topology{Queue: h.queue, BindingKey: h.queue}).Declare(setup); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := setup.PublishWithContext(context.Background(), "", h.queue, false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	started, proceed := make(chan struct{}), make(chan struct{})
	var start sessionStarter = func(ch *amqp.Channel, cfg broker.SessionConfig) (consumerSession, amqp.Queue, error) {
		s, q, err := startBrokerSession(ch, cfg)
		close(started)
		<-proceed
		return s, q, err
	}
	h.start.Store(&start)

	req := h.request(t)
	h.sys.Root.Send(req.ReplyTo, &ChannelReply{Nonce: req.Nonce, Channel: h.channel(t)})
	<-started
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		ready, _ := brokertest.Inspect(t, h.conn, h.queue)
		return ready == 0
	}, "the session holding the messages")
	h.stop(t)
	close(proceed)
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		ready, consumers := brokertest.Inspect(t, h.conn, h.queue)
		return ready == 5 && consumers == 0
	}, "the 5 deliveries back in the queue, no consumer left")
}

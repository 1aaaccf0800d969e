package conformance

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// secondSettlement: settling a delivery twice fails the channel with 406
// PRECONDITION_FAILED and requeues every delivery still unsettled, so a
// double-ack bug in hato fails on the in-memory broker as on RabbitMQ.
func secondSettlement(t *testing.T, s *suite) {
	wire, err := broker.WireRoutingKey(s.prefix, "double")
	if err != nil {
		t.Fatal(err)
	}
	cfg, got, closed := sessionConfig(broker.Topology{Queue: s.prefix + "double", BindingKey: wire})
	s.env.Session(t, cfg)
	p := s.publisher(t)
	publish(t, p, "double", item{ID: "1"})
	publish(t, p, "double", item{ID: "2"})
	first, second := receive(t, got), receive(t, got)
	first.Ack()
	first.Ack()
	err = receiveErr(t, closed)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !errors.Is(err, broker.ErrPreconditionFailed) {
		t.Fatalf("session after a second ack closed with %v, want 406 PRECONDITION_FAILED", err)
	}
	// The unsettled delivery went back to the queue; the acked one did not.
	cfg, got, closed = sessionConfig(cfg.Topology)
	again := s.env.Session(t, cfg)
	d := receive(t, got)
	if string(d.Body) != string(second.Body) || !d.Redelivered {
		t.Errorf("after the channel error got %s (redelivered %v), want %s redelivered", d.Body, d.Redelivered, second.Body)
	}
	d.Ack()
	again.Close()
	if err := receiveErr(t, closed); err != nil {
		t.Errorf("closing the second session: %v", err)
	}
	select {
	case extra := <-got:
		t.Errorf("got %s again after the acked delivery", extra.Body)
	default:
	}
}

// sessionConfig is a session config on topology whose deliveries and
// close come out of the returned channels.
func sessionConfig(topology broker.Topology) (broker.SessionConfig, chan *broker.Delivery, chan error) {
	got, closed := make(chan *broker.Delivery, 16), make(chan error, 1)
	return broker.SessionConfig{
		Topology: topology, Prefetch: 10,
		Deliver: func(d *broker.Delivery) { got <- d },
		Closed:  func(err error) { closed <- err },
	}, got, closed
}

func receive(t *testing.T, got <-chan *broker.Delivery) *broker.Delivery {
	t.Helper()
	select {
	case d := <-got:
		return d
	case <-time.After(Timeout):
		t.Fatalf("no delivery in %s", Timeout)
		return nil
	}
}

func receiveErr(t *testing.T, closed <-chan error) error {
	t.Helper()
	select {
	case err := <-closed:
		return err
	case <-time.After(Timeout):
		t.Fatalf("session not closed in %s", Timeout)
		return nil
	}
}

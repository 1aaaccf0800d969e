//go:build integration

package conformance_test

import (
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/conformance"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/internal/transport"
	"github.com/hato-go/hato/test/brokertest"
)

// rabbit runs the suite on RabbitMQ, in this package's vhost.
type rabbit struct{}

func (rabbit) Options(t *testing.T) []hato.Option {
	return testutil.Options(t, pkgVhost.URL(t))
}

// DeadLetters takes the messages out of the queue (basic.get) once it
// holds n.
func (rabbit) DeadLetters(t *testing.T, queue string, n int) []conformance.Message {
	t.Helper()
	conn := brokertest.Dial(t, pkgVhost.URL(t), "conformance-inspect")
	defer conn.Close()
	brokertest.WaitFor(t, conformance.Timeout, func() bool {
		m, _, err := brokertest.InspectQueue(conn, queue)
		return err == nil && m >= n
	}, "%d messages in %s", n, queue)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var out []conformance.Message
	deadline := time.Now().Add(conformance.Timeout)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		out = append(out, conformance.Message{Headers: d.Headers, Body: d.Body})
	}
	return out
}

// Session consumes on a channel of a connection of its own, closed when
// the test ends.
func (rabbit) Session(t *testing.T, cfg broker.SessionConfig) transport.Session {
	t.Helper()
	conn := brokertest.Dial(t, pkgVhost.URL(t), "conformance-session")
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := broker.StartSession(ch, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformanceRabbitMQ(t *testing.T) {
	conformance.Run(t, rabbit{})
}

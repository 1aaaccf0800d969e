package conformance_test

import (
	"testing"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/hatotest"
	"github.com/hato-go/hato/internal/conformance"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/internal/transport"
	"github.com/hato-go/hato/test/brokertest"
)

// memory runs the suite on one hatotest.Broker per test.
type memory struct{ b *hatotest.Broker }

func (m *memory) Options(t *testing.T) []hato.Option {
	return []hato.Option{hatotest.Transport(m.b), hato.WithLogger(testutil.Logger(t))}
}

func (m *memory) DeadLetters(t *testing.T, queue string, n int) []conformance.Message {
	t.Helper()
	var msgs []hatotest.Message
	brokertest.WaitFor(t, conformance.Timeout, func() bool {
		msgs = m.b.DeadLettered(queue)
		return len(msgs) >= n
	}, "%d messages in %s", n, queue)
	out := make([]conformance.Message, len(msgs))
	for i, msg := range msgs {
		out[i] = conformance.Message{Headers: msg.Publishing.Headers, Body: msg.Publishing.Body}
	}
	return out
}

func (m *memory) Session(t *testing.T, cfg broker.SessionConfig) transport.Session {
	t.Helper()
	s, _, err := transport.Memory(m.b).StartSession(nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformanceInMemory(t *testing.T) {
	conformance.Run(t, &memory{b: hatotest.NewBroker()})
}

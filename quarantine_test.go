//go:build integration

package hato_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 17: one message whose headers amqp091-go cannot read (nested 40
// deep, or 9 000 entries) reaches its route's dead-letter queue with
// reason "unparseable", its other properties and its raw header table;
// the good messages behind it, on its route and on a route sharing the
// consuming connection, are all handled, and no connection or channel is
// lost. Before the frame guard, the consuming connection died at the
// message and again at every redelivery, and nothing behind it arrived.
func TestUnparseableHeadersAreQuarantined(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers amqp.Table
		reason  string
	}{
		{"nested 40", brokertest.NestedHeaders(40), "nested deeper than 32"},
		{"9000 entries", brokertest.WideHeaders(9000), "more than 8192 elements"},
	} {
		t.Run(tc.name, func(t *testing.T) { quarantineCase(t, tc.headers, tc.reason) })
	}
}

func quarantineCase(t *testing.T, headers amqp.Table, reason string) {
	const n = 200
	keyA, keyB := testutil.Key(t, "hostile-a"), testutil.Key(t, "hostile-b")
	sup := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	svc := newService(t, "quarantine", hato.WithSupervisorEvents(sup.Add))
	handle := func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	}
	mustSubscribe(t, svc, keyA, handle)
	mustSubscribe(t, svc, keyB, handle)
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	ready := sup.Count(hato.EventReady)

	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", keyA, amqp.Publishing{
		Headers: headers, MessageId: "hostile", ContentType: "application/json",
		CorrelationId: "corr-1", Body: []byte(`{"id":"hostile"}`),
	})
	p := publisher(t)
	publishN(t, p, keyA, fmtIDs("a", n))
	publishN(t, p, keyB, fmtIDs("b", n))
	got.WaitDistinct(t, 2*n, 60*time.Second)

	conn := brokertest.Dial(t, brokerURL(t), "test-quarantine-check")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		var ok bool
		d, ok, err = ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "the hostile message in %s", dlq)
	why, _ := d.Headers[actors.HeaderReason].(string)
	if !strings.HasPrefix(why, "unparseable: ") || !strings.Contains(why, reason) {
		t.Errorf("%s = %q, want unparseable: ...%s", actors.HeaderReason, why, reason)
	}
	if raw, _ := d.Headers[broker.HeaderRawHeaders].([]byte); len(raw) == 0 {
		t.Errorf("no raw header table in %s", broker.HeaderRawHeaders)
	}
	if d.MessageId != "hostile" || d.CorrelationId != "corr-1" || d.ContentType != "application/json" ||
		string(d.Body) != `{"id":"hostile"}` {
		t.Errorf("properties or body of the copy: %+v", d)
	}
	if got.Count("hostile") != 0 {
		t.Error("the handler ran on the unparseable message")
	}
	if n := sup.Count(hato.EventUnavailable); n != 0 || sup.Count(hato.EventReady) != ready {
		t.Errorf("%d unavailable events, ready %d -> %d: connections or channels were lost",
			n, ready, sup.Count(hato.EventReady))
	}
	if m, _ := brokertest.Inspect(t, conn, dlq); m != 0 {
		t.Errorf("%d more messages in the dead-letter queue", m)
	}
}

// Issue 17: a message whose headers are just under frame_max can be
// dead-lettered: the copy, which would not fit with hato's headers added,
// drops the original's largest headers (and says so) instead of costing
// the publishing connection at every attempt.
func TestDeadLetterOfHeadersNearFrameMax(t *testing.T) {
	key := testutil.Key(t, "near-frame-max")
	sup := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	svc := newService(t, "near-frame-max", hato.WithSupervisorEvents(sup.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	ready := sup.Count(hato.EventReady)

	// Its body is no envelope: it is dead-lettered as undecodable.
	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", key, amqp.Publishing{
		Headers: amqp.Table{"big": strings.Repeat("x", 130_900), "small": "kept"}, MessageId: "big",
		Body: []byte(`{"id":"big"}`),
	})
	publishN(t, publisher(t), key, fmtIDs("after", 50))
	got.WaitDistinct(t, 50, 60*time.Second)

	conn := brokertest.Dial(t, brokerURL(t), "test-near-frame-max-check")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		var ok bool
		d, ok, err = ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "the copy in %s", dlq)
	note, _ := d.Headers[actors.HeaderDroppedHeaders].(string)
	if !strings.Contains(note, "big") || d.Headers["small"] != "kept" || d.MessageId != "big" {
		t.Errorf("copy: note %q, small %v, id %q", note, d.Headers["small"], d.MessageId)
	}
	if n := sup.Count(hato.EventUnavailable); n != 0 || sup.Count(hato.EventReady) != ready {
		t.Errorf("%d unavailable events: connections or channels were lost", n)
	}
}

// Over amqps the guard sits above TLS (the dialer does the handshake):
// the hostile message is quarantined there too.
func TestUnparseableHeadersAreQuarantinedOverTLS(t *testing.T) {
	u, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTLSProxy(t, net.JoinHostPort(u.Host, "5672"))
	u.Scheme, u.Host = "amqps", "127.0.0.1"
	_, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	u.Port = atoiOrFail(t, port)

	key := testutil.Key(t, "tls-hostile")
	got := testutil.NewCollector()
	svc, err := hato.New("tls-hostile", append(testutil.Options(t, u.String()),
		hato.WithTLS(&tls.Config{RootCAs: proxy.roots, MinVersion: tls.VersionTLS12}))...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", key, amqp.Publishing{
		Headers: brokertest.NestedHeaders(40), MessageId: "hostile", Body: []byte(`{"id":"hostile"}`),
	})
	publishN(t, publisher(t), key, []string{"good"})
	got.WaitDistinct(t, 1, 30*time.Second)
	conn := brokertest.Dial(t, brokerURL(t), "test-tls-hostile-check")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, dlq)
		return n == 1
	}, "the hostile message in %s", dlq)
	if got.Count("hostile") != 0 {
		t.Error("the handler ran on the unparseable message")
	}
}

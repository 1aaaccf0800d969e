//go:build integration

package hato_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// badPublishes is the bad-input table of Publish: each fails at once with
// its typed error, and the service never sees the frame.
func badPublishes() []struct {
	name string
	data any
	key  string
	opts []hato.PublishOption
	want []error
} {
	long := strings.Repeat("k", 300)
	return []struct {
		name string
		data any
		key  string
		opts []hato.PublishOption
		want []error
	}{
		{"routing key of 300 bytes", "x", long, nil, []error{hato.ErrInvalidRoutingKey, hato.ErrInvalidArgument}},
		{"routing key of 256 bytes once prefixed", "x", strings.Repeat("k", 250), []hato.PublishOption{hato.RoutingKeyPrefix("prefix")}, []error{hato.ErrInvalidRoutingKey}},
		{"routing key of 64 bytes, 256 once encoded", "x", strings.Repeat("é", 32), nil, []error{hato.ErrInvalidRoutingKey}},
		{"routing key not UTF-8", "x", "a.\xff.b", nil, []error{hato.ErrInvalidRoutingKey}},
		{"exchange name of 300 bytes", "x", "k", []hato.PublishOption{hato.Exchange(long)}, []error{hato.ErrInvalidName, hato.ErrInvalidArgument}},
		{"exchange name not UTF-8", "x", "k", []hato.PublishOption{hato.Exchange("ex\xfe")}, []error{hato.ErrInvalidName}},
		{"header of an unsupported type", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"h": struct{}{}})}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"header nested in a table of an unsupported type", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"t": amqp.Table{"u": uint64(1)}})}, []error{hato.ErrInvalidHeaders}},
		{"header name of 300 bytes", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{long: "v"})}, []error{hato.ErrInvalidHeaders}},
		{"nested header name of 300 bytes", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"t": []any{amqp.Table{long: "v"}}})}, []error{hato.ErrInvalidHeaders}},
		{"headers nested 40 deep (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(brokertest.NestedHeaders(40))}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"headers of 9000 entries (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(brokertest.WideHeaders(9000))}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"headers over frame_max (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"big": strings.Repeat("x", 131000)})}, []error{hato.ErrPropertiesTooLarge, hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"payload JSON cannot encode", make(chan int), "k", nil, []error{hato.ErrInvalidPayload, envelope.ErrPayloadType, hato.ErrInvalidArgument}},
		{"nil payload with the protobuf envelope", nil, "k", []hato.PublishOption{hato.Envelope(envelope.Protobuf)}, []error{hato.ErrInvalidPayload, envelope.ErrPayloadType}},
	}
}

// TestBadPublishInputFailsAtOnceAndHarmsNothing: every bad publish, from
// outside and from inside a handler, fails at once with its typed error,
// the connection is never lost, and every good message published around
// the bad ones arrives.
func TestBadPublishInputFailsAtOnceAndHarmsNothing(t *testing.T) {
	key := testutil.Key(t, "good")
	relay := testutil.Key(t, "relay")
	sup := &testutil.SupervisorEvents{}
	good := testutil.NewCollector()
	svc := newService(t, "bad-publish", hato.WithSupervisorEvents(sup.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		good.Add(idOf(m))
		return nil
	})
	inHandler := make(chan error, 100)
	mustSubscribe(t, svc, relay, func(ctx context.Context, m *hato.Message[payload]) error {
		// The handler: forwards every message, one in ten to a bad key.
		for _, b := range badPublishes() {
			start := time.Now()
			err := svc.Publish(ctx, b.data, b.key, b.opts...)
			if !isAll(err, b.want) || time.Since(start) > time.Second {
				inHandler <- fmt.Errorf("in handler, %s: %v after %s, want %v at once", b.name, err, time.Since(start), b.want)
			}
		}
		return svc.Publish(ctx, map[string]any{"id": "relayed-" + m.Data.ID}, key)
	})
	testutil.Start(t, svc)
	p := publisher(t)

	var want []string
	for i, b := range badPublishes() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := p.Publish(ctx, b.data, b.key, b.opts...)
		cancel()
		if !isAll(err, b.want) {
			t.Errorf("%s: Publish = %v, want errors.Is %v", b.name, err, b.want)
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("%s: Publish took %s, want at once", b.name, d)
		}
		id := fmt.Sprintf("good-%d", i)
		want = append(want, id, "relayed-"+id)
		publishN(t, p, key, []string{id})
		publishN(t, p, relay, []string{id})
	}
	good.WaitDistinct(t, len(want), 60*time.Second)
	if missing := good.Missing(want); len(missing) > 0 {
		t.Fatalf("good messages lost around bad ones: %v", missing)
	}
	close(inHandler)
	for err := range inHandler {
		t.Error(err)
	}
	if n := sup.Count(hato.EventUnavailable); n != 0 {
		t.Errorf("%d unavailable events: a bad publish cost a connection or channel", n)
	}
}

// TestBadSubscribeInputFailsAtRegistration: a binding key, queue name or
// exchange name AMQP cannot carry is refused by Subscribe and Start, and
// the broker never sees it.
func TestBadSubscribeInputFailsAtRegistration(t *testing.T) {
	long := strings.Repeat("q", 300)
	h := func(context.Context, *hato.Message[any]) error { return nil }
	cases := []struct {
		name string
		key  string
		svc  []hato.Option
		opts []hato.RouteOption
		want error
	}{
		{"binding key of 300 bytes", long, nil, nil, hato.ErrInvalidRoutingKey},
		{"binding key of 256 bytes once prefixed", strings.Repeat("k", 250), []hato.Option{hato.RoutingKeyPrefix("prefix")}, nil, hato.ErrInvalidRoutingKey},
		{"binding pattern not UTF-8", "a.*.\xff", nil, nil, hato.ErrInvalidRoutingKey},
		{"queue name of 300 bytes", "k", nil, []hato.RouteOption{hato.QueueName(long)}, hato.ErrInvalidName},
		{"dead-letter queue name over 255 bytes", "k", nil, []hato.RouteOption{hato.QueueName(strings.Repeat("q", 253))}, hato.ErrInvalidName},
		{"queue name prefix of 300 bytes", "k", []hato.Option{hato.WithQueueNamePrefix(long)}, nil, hato.ErrInvalidName},
		{"route exchange of 300 bytes", "k", nil, []hato.RouteOption{hato.Exchange(long)}, hato.ErrInvalidName},
		{"service exchange not UTF-8", "k", []hato.Option{hato.Exchange("ex\xff")}, nil, hato.ErrInvalidName},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := newService(t, "bad-subscribe", c.svc...)
			if err := hato.Subscribe(svc, c.key, h, c.opts...); !errors.Is(err, c.want) || !errors.Is(err, hato.ErrInvalidArgument) {
				t.Fatalf("Subscribe = %v, want %v", err, c.want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := svc.Start(ctx); !errors.Is(err, c.want) {
				_ = svc.Stop(ctx)
				t.Fatalf("Start = %v, want %v", err, c.want)
			}
		})
	}
	// The broker and other services are untouched.
	key := testutil.Key(t, "after")
	got := testutil.NewCollector()
	svc := newService(t, "after-bad-subscribe")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error { got.Add(idOf(m)); return nil })
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"ok"})
	got.WaitDistinct(t, 1, 30*time.Second)
	if q, ok, err := brokertest.FindQueue(brokerVhost(t), strings.Repeat("q", 253)); err != nil || ok {
		t.Errorf("a refused queue was declared: %v %v", q.Name, err)
	}
}

func isAll(err error, targets []error) bool {
	if err == nil {
		return false
	}
	for _, t := range targets {
		if !errors.Is(err, t) {
			return false
		}
	}
	return true
}

//go:build integration

package hato_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

func TestDeclaredQueuesCarryTomodachisArguments(t *testing.T) {
	key := testutil.Key(t, "args")
	svc := newService(t, "args")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	testutil.Start(t, svc)
	r := svc.Routes()[0]

	q, ok, err := brokertest.FindQueue(brokerVhost(t), r.Queue)
	if err != nil || !ok {
		t.Fatalf("queue %s: found=%v err=%v", r.Queue, ok, err)
	}
	if !q.Durable || q.AutoDelete || q.Exclusive {
		t.Errorf("queue %s durable=%v auto_delete=%v exclusive=%v; tomodachi declares durable, not auto-delete, not exclusive",
			q.Name, q.Durable, q.AutoDelete, q.Exclusive)
	}
	if len(q.Arguments) != 1 || toInt(q.Arguments["x-expires"]) != 86400000 {
		t.Errorf("queue arguments %v, want exactly x-expires=86400000", q.Arguments)
	}

	// The proof that matters: tomodachi's own declaration of that queue
	// (x-expires as a plain int, as aioamqp sends it) is accepted by the
	// broker, so a tomodachi node and a hato node can share it.
	conn := brokertest.Dial(t, brokerURL(t), "test-tomodachi-like")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(r.Queue, true, false, false, false, amqp.Table{"x-expires": int32(86400000)}); err != nil {
		t.Fatalf("tomodachi-style declaration of %s refused: %v", r.Queue, err)
	}

	dlq, ok, err := brokertest.FindQueue(brokerVhost(t), r.DeadLetterQueue)
	if err != nil || !ok {
		t.Fatalf("dead-letter queue %s: found=%v err=%v", r.DeadLetterQueue, ok, err)
	}
	if !dlq.Durable || len(dlq.Arguments) != 0 {
		t.Errorf("dead-letter queue durable=%v arguments=%v, want durable without arguments (it must not expire)", dlq.Durable, dlq.Arguments)
	}
}

func TestQueueTTLZeroDeclaresNoArguments(t *testing.T) {
	key := testutil.Key(t, "no-ttl")
	svc := newService(t, "no-ttl", hato.WithQueueTTL(0))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	testutil.Start(t, svc)
	q, ok, err := brokertest.FindQueue(brokerVhost(t), svc.Routes()[0].Queue)
	if err != nil || !ok {
		t.Fatalf("queue: found=%v err=%v", ok, err)
	}
	if len(q.Arguments) != 0 {
		t.Errorf("arguments %v, want none with queue TTL 0", q.Arguments)
	}
}

func TestCustomExchangeIsDeclaredAsTomodachiDeclaresIt(t *testing.T) {
	key := testutil.Key(t, "custom")
	exchange := "hato.test." + key
	got := testutil.NewCollector()
	svc := newService(t, "custom-exchange")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if m.Exchange != exchange {
			t.Errorf("message came through %q, want %q", m.Exchange, exchange)
		}
		got.Add(idOf(m))
		return nil
	}, hato.Exchange(exchange))
	testutil.Start(t, svc)

	exchanges, err := brokertest.ListExchanges(brokerVhost(t))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range exchanges {
		if e.Name == exchange {
			found = true
			if e.Type != "topic" || !e.Durable || e.AutoDelete || e.Internal {
				t.Errorf("exchange %+v: want topic, durable, not auto-delete, not internal", e)
			}
		}
	}
	if !found {
		t.Fatalf("exchange %s not declared", exchange)
	}
	// Declaring amq.topic is never attempted; a tomodachi-style redeclare of
	// the custom exchange is accepted.
	conn := brokertest.Dial(t, brokerURL(t), "test-exchange-redeclare")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("tomodachi-style redeclare refused: %v", err)
	}

	publishN(t, publisher(t), key, []string{"via-custom"}, hato.Exchange(exchange))
	got.WaitDistinct(t, 1, 10*time.Second)
}

func TestConflictingQueueDeclarationFailsStart(t *testing.T) {
	key := testutil.Key(t, "conflict")
	// Someone declared the queue with other arguments (e.g. another TTL).
	probe := newService(t, "probe")
	mustSubscribe(t, probe, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	queue := probe.Routes()[0].Queue
	conn := brokertest.Dial(t, brokerURL(t), "test-conflict")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-expires": int32(1000)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = probe.Start(ctx)
	if err == nil {
		_ = probe.Stop(context.Background())
		t.Fatal("Start succeeded although the queue exists with other arguments")
	}
	if ctx.Err() != nil {
		t.Fatalf("Start waited for its deadline instead of failing fast: %v", err)
	}
	if !errorsIs(err, hato.ErrPreconditionFailed) {
		t.Fatalf("Start: %v, want ErrPreconditionFailed", err)
	}
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	case float64:
		return int64(n)
	case int32:
		return int64(n)
	}
	return -1
}

//go:build integration

package hato_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

func TestLifecycleHooksRunInOrderAndOnStopMayPublish(t *testing.T) {
	key := testutil.Key(t, "goodbye")
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	got := testutil.NewCollector()
	sink := newService(t, "hooks-sink")
	mustSubscribe(t, sink, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, sink)

	svc := newService(t, "hooks")
	svc.OnStart(func(ctx context.Context) error {
		note("start")
		if err := svc.Publish(ctx, "too early", key); !errorsIs(err, hato.ErrNotStarted) {
			t.Errorf("publish in OnStart: %v, want ErrNotStarted", err)
		}
		return nil
	})
	svc.OnStarted(func(ctx context.Context) error { note("started"); return nil })
	svc.OnStop(func(ctx context.Context) error {
		note("stop")
		return svc.Publish(ctx, map[string]any{"id": "goodbye"}, key)
	})
	mustSubscribe(t, svc, testutil.Key(t, "unused"), func(ctx context.Context, m *hato.Message[any]) error {
		note("handler")
		return nil
	})
	testutil.Start(t, svc)
	testutil.Stop(t, svc)
	got.WaitDistinct(t, 1, 10*time.Second) // published from OnStop, confirmed before the connection closed
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "start,started,stop" {
		t.Errorf("hooks ran as %v", order)
	}
}

func TestConcurrencyOneKeepsOrder(t *testing.T) {
	key := testutil.Key(t, "ordered")
	var mu sync.Mutex
	var seen []string
	svc := newService(t, "ordered")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		seen = append(seen, idOf(m))
		mu.Unlock()
		return nil
	})
	testutil.Start(t, svc)
	ids := fmtIDs("o", 300)
	publishN(t, publisher(t), key, ids) // one after another, each confirmed
	brokertest.WaitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == len(ids) }, "all handled")
	mu.Lock()
	defer mu.Unlock()
	for i := range ids {
		if seen[i] != ids[i] {
			t.Fatalf("message %d was %s, want %s: concurrency 1 must keep order", i, seen[i], ids[i])
		}
	}
}

func TestProtoActorLogsGoToTheServiceLogger(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	svc := newService(t, "logging", hato.WithLogger(zap.New(core)))
	testutil.Start(t, svc)
	if n := logs.FilterLoggerName("protoactor").FilterMessage("actor system started").Len(); n != 1 {
		t.Errorf("protoactor's start message reached the zap logger %d times, want 1", n)
	}
}

func TestPublishWaitsThroughAnOutageAndTheBufferIsBounded(t *testing.T) {
	key := testutil.Key(t, "outage")
	proxy, viaProxy := brokertest.Proxy(t, brokerURL(t))
	got := testutil.NewCollector()
	sink := newService(t, "outage-sink")
	mustSubscribe(t, sink, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, sink)

	p := newService(t, "outage-publisher", hato.WithURL(viaProxy), hato.WithPublishBuffer(5))
	testutil.Start(t, p)
	// The broker becomes unreachable for the publisher.
	proxy.SetRefuse(true)
	proxy.CutAll()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- p.Publish(ctx, map[string]any{"id": fmt.Sprint("w-", i)}, key)
		}(i)
	}
	// Five are waiting; the sixth finds the buffer full at once.
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		st, err := p.Status(context.Background())
		return err == nil && !st.Connected && st.Buffered == 5
	}, "five publishes buffered while disconnected")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Publish(ctx, map[string]any{"id": "overflow"}, key); !errorsIs(err, hato.ErrBufferFull) {
		t.Fatalf("sixth publish: %v, want ErrBufferFull", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("a publish returned while the broker was unreachable: %v", err)
	default:
	}
	proxy.SetRefuse(false) // back: the five are sent after reconnecting
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("publish through the outage: %v", err)
		}
	}
	got.WaitDistinct(t, 5, 20*time.Second)
}

func TestBrokerNackComesBackAsAnError(t *testing.T) {
	key := testutil.Key(t, "full")
	conn := brokertest.Dial(t, brokerURL(t), "test-nack")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, key, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	p := publisher(t)
	ctx := context.Background()
	if err := p.Publish(ctx, "first", key); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "second", key); !errorsIs(err, hato.ErrNacked) {
		t.Fatalf("publish into a full reject-publish queue: %v, want ErrNacked", err)
	}
}

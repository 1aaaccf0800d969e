//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// TestRetryDelayHoldsNoSlot: with Concurrency(1), a message waiting for
// its delayed retry holds no handler slot and no unacked delivery: the
// next message is handled while it waits in its delay queue, which is
// declared durable with hato's arguments, while the route's queue keeps
// tomodachi's.
func TestRetryDelayHoldsNoSlot(t *testing.T) {
	key := testutil.Key(t, "delay")
	svc := newService(t, "delayed", hato.FailureHandling(hato.FailurePolicy{RetryDelays: []time.Duration{2 * time.Second}}))
	var mu sync.Mutex
	var order []string
	release := make(chan struct{})
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		order = append(order, m.Data.ID+"/"+string(rune('0'+m.Retry)))
		mu.Unlock()
		if m.Data.ID == "a" && m.Retry == 0 {
			return errors.New("fails once")
		}
		if m.Data.ID == "b" {
			<-release // b runs while a waits in the delay queue
		}
		return nil
	}, hato.Concurrency(1))
	testutil.Start(t, svc)
	route := svc.Routes()[0]
	p := publisher(t)
	publishN(t, p, key, []string{"a", "b"})
	delayQueue := broker.RetryQueueName(route.Queue, 2*time.Second)
	conn := brokertest.Dial(t, brokerURL(t), "test-delay-slot")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 2
	}, "b to run")
	if m, _ := brokertest.Inspect(t, conn, delayQueue); m != 1 {
		t.Errorf("delay queue holds %d messages while b runs, want a", m)
	}
	close(release)
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 3
	}, "a's delayed retry")
	mu.Lock()
	if order[0] != "a/0" || order[1] != "b/0" || order[2] != "a/1" {
		t.Errorf("runs %v, want [a/0 b/0 a/1]", order)
	}
	mu.Unlock()
	q, ok, err := brokertest.FindQueue(brokerVhost(t), delayQueue)
	if err != nil || !ok {
		t.Fatalf("delay queue %s: %v %v", delayQueue, ok, err)
	}
	args := q.Arguments
	if !q.Durable || args["x-message-ttl"] != int64(2000) || args["x-dead-letter-exchange"] != "" ||
		args["x-dead-letter-routing-key"] != route.Queue || args["x-expires"] != int64(7*24*time.Hour/time.Millisecond) {
		t.Errorf("delay queue %+v", q)
	}
	main, _, err := brokertest.FindQueue(brokerVhost(t), route.Queue)
	if err != nil || main.Arguments["x-dead-letter-exchange"] != nil || main.Arguments["x-message-ttl"] != nil {
		t.Errorf("route queue arguments changed: %+v %v", main.Arguments, err)
	}
}

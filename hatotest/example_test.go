package hatotest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/hatotest"
)

type order struct {
	ID    int `json:"id"`
	Total int `json:"total"`
}

// A handler that publishes onward, tested without a broker: inject a
// message, wait until everything is settled, look at what was published.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	svc, err := hato.New("billing", hatotest.Transport(b))
	if err != nil {
		panic(err)
	}
	_ = hato.Subscribe(svc, "order.created", func(ctx context.Context, msg *hato.Message[order]) error {
		return svc.Publish(ctx, map[string]any{"order": msg.Data.ID, "amount": msg.Data.Total}, "invoice.issued")
	})
	if err := svc.Start(ctx); err != nil {
		panic(err)
	}
	defer svc.Stop(ctx)

	_ = b.Publish(ctx, "order.created", order{ID: 7, Total: 420})
	if err := b.WaitIdle(ctx); err != nil {
		panic(err)
	}
	for _, m := range b.PublishedTo("invoice.#") {
		fmt.Println(m.Topic, m.Service.Name, m.Data)
	}
	// Output: invoice.issued billing map[amount:420 order:7]
}

// A handler that keeps failing: retried as its failure policy says, then
// dead-lettered with the reason in a header.
func ExampleBroker_DeadLettered() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	svc, _ := hato.New("billing", hatotest.Transport(b),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 3, Backoff: hato.Backoff{Initial: time.Millisecond}}))
	_ = hato.Subscribe(svc, "order.created", func(ctx context.Context, msg *hato.Message[order]) error {
		return errors.New("payment service down")
	})
	if err := svc.Start(ctx); err != nil {
		panic(err)
	}
	defer svc.Stop(ctx)

	_ = b.Publish(ctx, "order.created", order{ID: 8})
	_ = b.WaitIdle(ctx)
	for _, m := range b.DeadLettered(svc.Routes()[0].DeadLetterQueue) {
		reason := m.Header("x-hato-reason").(string)
		fmt.Println(m.Data, m.Header("x-hato-attempts"), strings.HasSuffix(reason, ": payment service down"))
	}
	// Output: map[id:8 total:0] 3 true
}

// Several services on one broker behave as on RabbitMQ: two instances of a
// service share a competing route's queue, so each message is handled
// once, and each instance gets every message of a non-competing route.
func ExampleNewBroker() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	var mu sync.Mutex
	handled := map[string]int{}
	count := func(what string) hato.Handler[order] {
		return func(context.Context, *hato.Message[order]) error {
			mu.Lock()
			handled[what]++
			mu.Unlock()
			return nil
		}
	}
	for range 2 {
		svc, _ := hato.New("billing", hatotest.Transport(b))
		_ = hato.Subscribe(svc, "order.created", count("competing"))
		_ = hato.Subscribe(svc, "order.cancelled", count("not competing"), hato.NotCompeting())
		if err := svc.Start(ctx); err != nil {
			panic(err)
		}
		defer svc.Stop(ctx)
	}
	for i := range 3 {
		_ = b.Publish(ctx, "order.created", order{ID: i})
		_ = b.Publish(ctx, "order.cancelled", order{ID: i})
	}
	_ = b.WaitIdle(ctx)
	mu.Lock()
	defer mu.Unlock()
	fmt.Println("competing:", handled["competing"], "not competing:", handled["not competing"])
	// Output: competing: 3 not competing: 6
}

// A route with hato.Dedupe handles a message uuid once: publish the same
// uuid twice with MessageUUID.
func ExampleMessageUUID() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	svc, _ := hato.New("billing", hatotest.Transport(b))
	var mu sync.Mutex
	handled := 0
	_ = hato.Subscribe(svc, "order.created", func(ctx context.Context, msg *hato.Message[order]) error {
		mu.Lock()
		handled++
		mu.Unlock()
		return nil
	}, hato.HandlerName("countOrders"), hato.Dedupe(time.Hour, nil))
	if err := svc.Start(ctx); err != nil {
		panic(err)
	}
	defer svc.Stop(ctx)

	for range 2 {
		_ = b.Publish(ctx, "order.created", order{ID: 7}, hatotest.MessageUUID("orders.4f3c"))
	}
	if err := b.WaitIdle(ctx); err != nil {
		panic(err)
	}
	mu.Lock()
	fmt.Println("handled", handled)
	mu.Unlock()
	// Output: handled 1
}

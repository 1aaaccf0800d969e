package hato_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
)

// tomodachi's amqp-example service: subscribe to example.topic, forward to
// example.response. Routes shows the queue it consumes, named exactly as
// tomodachi names it, so a tomodachi node and this one can share it.
func ExampleSubscribe() {
	svc, err := hato.New("amqp-example")
	if err != nil {
		panic(err)
	}
	_ = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, "example.response")
	})
	for _, r := range svc.Routes() {
		fmt.Println(r.RoutingKey, "→", r.Queue)
	}
	// Running it: hato.Main(svc), which connects, consumes, and stops
	// gracefully on SIGINT/SIGTERM.

	// Output: example.topic → 6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175
}

// A handler returns Requeue when the message should go back to the queue at
// once, for example while a downstream service is busy; the error keeps its
// cause for errors.Is and logs. A handler is a plain function, so it can be
// called without a broker.
func ExampleRequeue() {
	errBusy := errors.New("downstream busy")
	handler := func(ctx context.Context, msg *hato.Message[map[string]any]) error {
		if msg.Data["warehouse"] == "closed" {
			return hato.Requeue(fmt.Errorf("order %v: %w", msg.Data["order"], errBusy))
		}
		if msg.Data["order"] == nil {
			return hato.DeadLetter(errors.New("no order number")) // to <queue>.dlq now
		}
		return nil // ack
	}

	err := handler(context.Background(), &hato.Message[map[string]any]{
		Data: map[string]any{"order": 7, "warehouse": "closed"},
	})
	fmt.Println(err)
	fmt.Println(errors.Is(err, errBusy))
	// Output:
	// order 7: downstream busy
	// true
}

// Publish outside a handler returns once the broker confirmed the message.
// Mandatory makes a message that no queue receives an error instead of a
// silent drop. (Needs a broker.)
func ExampleService_Publish() {
	svc, err := hato.New("amqp-example")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = svc.Stop(context.Background()) }()

	if err := svc.Publish(ctx, map[string]any{"order": 7}, "example.topic"); err != nil {
		log.Fatal(err)
	}
	err = svc.Publish(ctx, map[string]any{"order": 8}, "orders.nobody-listens",
		hato.Mandatory(), hato.Headers(map[string]any{"x-source": "example"}))
	if errors.Is(err, hato.ErrUnroutable) {
		log.Print("no queue is bound to orders.nobody-listens")
	}
}

type exampleKey struct{}

// Middleware wraps every handler of the service: here it passes a value to
// the handler through ctx and logs each message's outcome. A middleware is a
// plain function, so calling it shows what it does.
func ExampleWithMiddleware() {
	tag := func(next hato.HandlerFunc) hato.HandlerFunc {
		return func(ctx context.Context, msg *hato.Message[any]) error {
			err := next(context.WithValue(ctx, exampleKey{}, "tagged"), msg)
			fmt.Printf("%s on %s: err=%v\n", msg.MessageUUID(), msg.RoutingKey, err)
			return err
		}
	}
	handler := func(ctx context.Context, msg *hato.Message[any]) error {
		fmt.Println("handler sees", ctx.Value(exampleKey{}))
		return nil
	}

	svc, err := hato.New("amqp-example", hato.WithMiddleware(tag))
	if err != nil {
		panic(err)
	}
	_ = hato.Subscribe(svc, "example.topic", handler)

	_ = tag(handler)(context.Background(), &hato.Message[any]{
		RoutingKey: "example.topic",
		Metadata:   envelope.Metadata{MessageUUID: "m-1"},
	})
	// Output:
	// handler sees tagged
	// m-1 on example.topic: err=<nil>
}

// FailureHandling sets the failure policy for every route of the service or
// for one route; NoDeadLetterQueue turns the dead-letter queue off.
// WithDeliveryEvents reports every message dead-lettered or dropped.
func ExampleFailureHandling() {
	svc, err := hato.New("amqp-example",
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 5, MaxRedeliveries: 3}),
		hato.WithDeliveryEvents(func(ev hato.DeliveryEvent) {
			log.Printf("%s: message %s %s after %d attempts: %v", ev.Route, ev.MessageID, ev.Action, ev.Attempts, ev.Err)
		}))
	if err != nil {
		panic(err)
	}
	handler := func(ctx context.Context, msg *hato.Message[any]) error { return nil }
	_ = hato.Subscribe(svc, "orders.created", handler, hato.QueueName("orders"))
	_ = hato.Subscribe(svc, "orders.audit", handler, hato.QueueName("audit"),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 1, DeadLetterQueue: "audit.failed"}))
	_ = hato.Subscribe(svc, "metrics.tick", handler, hato.QueueName("ticks"), hato.NoDeadLetterQueue())

	for _, r := range svc.Routes() {
		fmt.Printf("%s: dead-letter queue %q\n", r.Queue, r.DeadLetterQueue)
	}
	// Output:
	// orders: dead-letter queue "orders.dlq"
	// audit: dead-letter queue "audit.failed"
	// ticks: dead-letter queue ""
}

// An actor route hands each decoded message to a user's actor in an
// embedding actor system; the actor replies Ack{} or an error, which the
// failure policy handles like a handler's. (Needs a broker.)
func ExampleSubscribeActor() {
	type order struct {
		ID string `json:"id"`
	}
	sys := actor.NewActorSystem()
	defer sys.Shutdown()

	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if msg, ok := ctx.Message().(*hato.Message[order]); ok {
			if msg.Data.ID == "" {
				ctx.Respond(hato.DeadLetter(errors.New("order without id")))
				return
			}
			ctx.Respond(hato.Ack{})
		}
	}))

	svc, err := hato.New("orders", hato.WithActorSystem(sys))
	if err != nil {
		log.Fatal(err)
	}
	if err := hato.SubscribeActor[order](svc, "orders.created", pid, hato.ActorTimeout(10*time.Second)); err != nil {
		log.Fatal(err)
	}
	if err := svc.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// Run starts the service, blocks until SIGINT or SIGTERM (or ctx ends, or a
// route gives up), then drains and stops it. ExitCode turns its error into
// the process's exit code; hato.Main does exactly this. (Needs a broker.)
func ExampleService_Run() {
	svc, err := hato.New("amqp-example", hato.WithDrainTimeout(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	_ = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, "example.response")
	})

	err = svc.Run(context.Background())
	if err != nil {
		log.Print(err)
	}
	os.Exit(hato.ExitCode(err))
}

// A route that skips (and acks) a message whose uuid it handled in the last
// ten minutes; the in-memory store is bounded.
func ExampleDedupe() {
	svc, _ := hato.New("billing")
	store := hato.NewMemoryDedupeStore(50_000)
	err := hato.Subscribe(svc, "payment.received", func(ctx context.Context, m *hato.Message[map[string]any]) error {
		return nil // charged once per message uuid
	}, hato.Dedupe(10*time.Minute, store))
	fmt.Println(err)

	ctx := context.Background()
	_ = store.Record(ctx, "queue/uuid-1", time.Minute)
	seen, _ := store.Seen(ctx, "queue/uuid-1")
	fmt.Println(seen)
	// Output:
	// <nil>
	// true
}

// The README's example, as it is there (TestReadmeExample checks they
// match): a main function's body. It has no Output comment, so it is
// compiled but not run.
func Example_readme() {
	svc, err := hato.New("amqp-example") // reads AMQP_URL
	if err != nil {
		log.Fatal(err)
	}
	err = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, "example.response")
	}, hato.HandlerName("forward")) // the name in logs and metrics (a closure's own is "func1")
	if err != nil {
		log.Fatal(err)
	}
	hato.Main(svc) // run until SIGINT/SIGTERM, drain, exit with a meaningful code
}

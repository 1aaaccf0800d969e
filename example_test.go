package hato_test

import (
	"context"
	"fmt"

	"github.com/hato-go/hato"
)

// The seed's service: subscribe to example.topic, forward to
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

// Handlers say what happens to a message that failed.
func ExampleRequeue() {
	handler := func(ctx context.Context, msg *hato.Message[map[string]any]) error {
		if msg.Data["retry_later"] == true {
			return hato.Requeue(fmt.Errorf("downstream busy")) // back to the queue now
		}
		if msg.Data["bogus"] == true {
			return hato.DeadLetter(fmt.Errorf("invalid order")) // to <queue>.dlq now
		}
		return nil // ack
	}
	_ = handler
	fmt.Println(hato.ExitCode(nil), hato.ExitStartFailed)
	// Output: 0 1
}

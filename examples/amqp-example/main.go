// Command amqp-example is tomodachi's amqp-example service on hato: it
// subscribes to "example.topic" and forwards every message's data to
// "example.response".
// It reads the broker URL from AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
package main

import (
	"context"
	"log"

	"github.com/hato-go/hato"
)

func main() {
	svc, err := hato.New("amqp-example")
	if err != nil {
		log.Fatal(err)
	}
	_ = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, "example.response")
	}, hato.HandlerName("example_func"))
	hato.Main(svc)
}

// Command amqp-example is tomodachi's amqp-example service on hato: it
// subscribes to "example.topic" and forwards every message's data to
// "example.response".
//
// It reads the broker URL from AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/), and switches on observability from
// the standard environment:
//
//   - OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
//     OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, and the other OTEL_* variables
//     the OTLP/HTTP exporters read): traces and metrics are exported with
//     OTLP/HTTP, with service.name and service.instance.id set;
//     OTEL_TRACES_EXPORTER=none or OTEL_METRICS_EXPORTER=none leaves one out;
//   - HATO_OPS_ADDR (e.g. :9464): /metrics, /healthz and /readyz.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
)

const name = "amqp-example"

func main() {
	ctx := context.Background()
	uuid := envelope.NewUUID4()
	opts, shutdown, err := telemetry(ctx, name, uuid)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: telemetry: %v\n", name, err)
		os.Exit(hato.ExitStartFailed)
	}
	svc, err := hato.New(name, append(opts, hato.WithUUID(uuid))...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(hato.ExitStartFailed)
	}
	_ = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, "example.response")
	}, hato.HandlerName("example_func"))
	err = svc.Run(ctx)
	shutdown() // flush the last spans and metrics
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	}
	os.Exit(hato.ExitCode(err))
}

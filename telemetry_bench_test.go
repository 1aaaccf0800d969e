package hato

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// reportCPU reports the process's CPU time per operation since cpu
// (cpu-ns/op): unlike ns/op it counts what other goroutines did meanwhile,
// such as a batch span processor's and the garbage collector's work, and
// not the time other processes took the CPU.
func reportCPU(b *testing.B, cpu time.Duration, ok bool) {
	if now, ok2 := processCPU(); ok && ok2 {
		b.ReportMetric(float64(now-cpu)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkTelemetry measures what tracing and metrics add to handling one
// forwarded message, without a broker: decoding, the handler, the publish's
// span and header injection. "none" is the handler pipeline without any
// telemetry (hato before it had some); "off" with nothing configured and no
// trace context in the message; "prop" with a traceparent and nothing
// configured; "record" with a recording SDK.
func BenchmarkTelemetry(b *testing.B) {
	for _, mode := range []string{"none", "off", "prop", "record"} {
		b.Run(mode, func(b *testing.B) {
			var opts []Option
			if mode == "record" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				defer func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) }()
				opts = append(opts, WithTracerProvider(tp), WithMeterProvider(mp))
			}
			svc, err := New("bench", append(opts, WithURL("amqp://guest:guest@127.0.0.1:1/"))...)
			if err != nil {
				b.Fatal(err)
			}
			traced := mode != "none"
			if err := Subscribe(svc, "bench.in", func(ctx context.Context, msg *Message[any]) error {
				pub := amqp.Publishing{}
				if traced {
					pt := svc.tel.startPublish(ctx, "", "bench.out", &pub)
					pt.handed()
					pt.finish(nil)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			handle := svc.routeHandler(svc.routes[0])
			if !traced {
				handle = svc.routes[0].handle(svc)
			}
			body, _ := envelope.JSON.Build(envelope.Build{Service: envelope.Service{Name: "d"}, Topic: "bench.in",
				MessageUUID: "u", Time: time.Now()}, map[string]any{"id": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}, envelope.Options{})
			var headers amqp.Table
			if mode == "prop" || mode == "record" {
				headers = amqp.Table{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			}
			d := &broker.Delivery{Delivery: amqp.Delivery{Headers: headers, Body: body, Exchange: "amq.topic", RoutingKey: "bench.in"}}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			cpu, ok := processCPU()
			for b.Loop() {
				if err := handle(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu, ok)
		})
	}
}

// BenchmarkTelemetryPath measures only what telemetry adds to one
// forwarded message, without decoding or a handler: the consumer run
// (extract, CONSUMER span, measurements) around one publish (PRODUCER
// span, header injection, published and confirmed counts, end). "none" is
// the same loop without telemetry; "off", "prop" and "record" as in
// BenchmarkTelemetry.
func BenchmarkTelemetryPath(b *testing.B) {
	for _, mode := range []string{"none", "off", "prop", "record"} {
		b.Run(mode, func(b *testing.B) {
			c := &config{}
			if mode == "record" {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				defer func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) }()
				c.tracerProvider, c.meterProvider = tp, mp
			}
			tel := newTelemetry(c, zap.NewNop(), nil)
			var sink amqp.Table
			next := func(ctx context.Context, d *broker.Delivery) error {
				pub := amqp.Publishing{}
				pt := tel.startPublish(ctx, "", "bench.out", &pub)
				pt.handed()
				pt.finish(nil)
				sink = pub.Headers
				return nil
			}
			handle := tel.consumer(newRouteTelemetry("", routeConfig{routingKey: "bench.in", handlerName: "forward"}), next)
			if mode == "none" {
				handle = func(ctx context.Context, d *broker.Delivery) error { sink = d.Headers; return nil }
			}
			var headers amqp.Table
			if mode == "prop" || mode == "record" {
				headers = amqp.Table{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
			}
			d := &broker.Delivery{Delivery: amqp.Delivery{Headers: headers, Exchange: "amq.topic", RoutingKey: "bench.in"}}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			cpu, ok := processCPU()
			for b.Loop() {
				if err := handle(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu, ok)
			if mode != "none" && (sink["traceparent"] == nil) != (headers == nil) {
				b.Fatalf("forwarded headers %v", sink)
			}
		})
	}
}

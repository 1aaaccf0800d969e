//go:build integration

package main

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/hato-go/hato/test/bench/internal/baseline"
	"github.com/hato-go/hato/test/brokertest"
)

// BenchmarkForwardPipeline forwards b.N JSON messages through a real broker
// in this process, one sub-benchmark per implementation:
//
//   - driver-only: the driver publishes straight to the output key and
//     consumes it: the driver's own cost per message;
//   - baseline: through the hand-written amqp091-go forwarder;
//   - hato: through a hato route (the example's forward, default options);
//   - hato-mailbox: the same in an actor system whose metrics count every
//     message an actor receives (protoactor's receive histogram): it reports
//     the messages per forwarded message of the route's consumer actor and of
//     the connection actor (its allocations include the counting).
//
// allocs/op counts every allocation of the process per forwarded message,
// so a service's own allocations per delivery are its figure minus
// driver-only's. Run it with a fixed count, e.g.
//
//	go test -tags integration -run '^$' -bench ForwardPipeline -benchmem -benchtime 20000x ./test/bench/
func BenchmarkForwardPipeline(b *testing.B) {
	url, cleanup, err := brokertest.SetupVhost("bench-pipeline")
	if err != nil {
		b.Fatal(err)
	}
	defer cleanup()
	d, err := newDriver(url)
	if err != nil {
		b.Fatal(err)
	}
	defer d.close()
	for _, name := range []string{"driver-only", "baseline", "hato", "hato-mailbox"} {
		b.Run(name, func(b *testing.B) { benchPipeline(b, d, url, name) })
	}
}

// noService stands for no service between the driver's publish and consume.
type noService struct{}

func (noService) Name() string                                                { return "driver-only" }
func (noService) Start(context.Context, string, string, string, string) error { return nil }
func (noService) Queues() []string                                            { return nil }
func (noService) Err() error                                                  { return nil }
func (noService) Stop(context.Context) error                                  { return nil }

func benchPipeline(b *testing.B, d *driver, url, name string) {
	var svc impl = noService{}
	switch name {
	case "baseline":
		svc = &baseline.Forwarder{}
	case "hato":
		svc = &hatoImpl{name: "hato", concurrency: 1}
	case "hato-mailbox":
		counted := newMailboxCounter()
		defer counted.report(b)
		svc = &hatoImpl{name: "hato", concurrency: 1, system: counted.system}
	}
	tag := name + "-" + newUUID4()[:8]
	in, out := "bench.pipe."+tag+".in", "bench.pipe."+tag+".out"
	tr := &tracking{sent: make([]atomic.Int64, b.N), recv: make([]atomic.Int64, b.N), count: make([]atomic.Int32, b.N)}
	stop, err := d.consumeKey(tr, out)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	key := out
	if name != "driver-only" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := svc.Start(ctx, url, tag, in, out)
		cancel()
		defer d.deleteQueues(svc.Queues())
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := svc.Stop(ctx); err != nil {
				b.Error(err)
			}
		}()
		key = in
	}
	bodies := d.buildAll(key, 0, b.N, strings.Repeat("x", 200))
	ph := newPhase(0, b.N)
	tr.cur.Store(ph)
	b.ReportAllocs()
	b.ResetTimer()
	if err := d.blast(tr, key, 0, bodies); err != nil {
		b.Fatal(err)
	}
	if err := d.wait(context.Background(), ph, svc, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// mailboxCounter is an actor system whose protoactor metrics record every
// user message an actor receives, by actor type and message type.
type mailboxCounter struct {
	system *actor.ActorSystem
	reader *sdkmetric.ManualReader
}

// protoactor takes its instruments from the global meter provider (the
// provider it is given only switches them on), so this sets the global
// one: hato's own instruments, which use the global provider when none is
// configured, record into it too.
func newMailboxCounter() *mailboxCounter {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	otel.SetMeterProvider(mp)
	quiet := func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }
	return &mailboxCounter{
		system: actor.NewActorSystemWithConfig(actor.Configure(actor.WithMetricProviders(mp), actor.WithLoggerFactory(quiet))),
		reader: reader,
	}
}

// report adds the consumer and connection actors' messages per forwarded
// message to the benchmark's metrics and logs them by message type.
func (m *mailboxCounter) report(b *testing.B) {
	defer m.system.Shutdown()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		b.Fatal(err)
	}
	perActor := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != "protoactor_actor_message_receive_duration_seconds" {
				continue
			}
			h, ok := mt.Data.(metricdata.Histogram[float64])
			if !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				at, _ := dp.Attributes.Value("actortype")
				mt, _ := dp.Attributes.Value("messagetype")
				perActor[at.AsString()] += dp.Count
				if float64(dp.Count) < float64(b.N)/1000 {
					continue // start and stop
				}
				b.Logf("%s <- %s: %.3f per forwarded message", at.AsString(), mt.AsString(), float64(dp.Count)/float64(b.N))
			}
		}
	}
	b.ReportMetric(float64(perActor["actors.consumer"])/float64(b.N), "consumer-msgs/op")
	b.ReportMetric(float64(perActor["actors.connection"])/float64(b.N), "connection-msgs/op")
}

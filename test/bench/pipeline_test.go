//go:build !unit

package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato/test/bench/internal/baseline"
	"github.com/hato-go/hato/test/brokertest"
)

// BenchmarkForwardPipeline forwards b.N JSON messages through a real broker
// in this process, one sub-benchmark per implementation:
//
//   - driver-only: the driver publishes straight to the output key and
//     consumes it: the driver's own cost per message;
//   - baseline: through the hand-written amqp091-go forwarder;
//   - hato: through a hato route (the example's forward, default options).
//
// allocs/op counts every allocation of the process per forwarded message,
// so a service's own allocations per delivery are its figure minus
// driver-only's. Run it with a fixed count, e.g.
//
//	go test -run '^$' -bench ForwardPipeline -benchmem -benchtime 20000x ./test/bench/
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
	for _, name := range []string{"driver-only", "baseline", "hato"} {
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

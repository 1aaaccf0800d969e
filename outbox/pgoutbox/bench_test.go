//go:build integration

package pgoutbox_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/outbox/pgoutbox"
	"github.com/hato-go/hato/test/brokertest"
)

// BenchmarkOutbox compares, in one run, b.N messages:
//   - throughput: a direct Service.Publish from 16 goroutines vs the relay
//     draining b.N rows committed beforehand (msg/s each, and their ratio);
//   - latency: a direct Publish call (call to confirm) vs one row committed
//     alone to its broker confirm by the relay (p50/p99 each, ratios).
func BenchmarkOutbox(b *testing.B) {
	_, url := brokertest.NewVhost(b)
	pool, sch := schema(b)
	confirmed := &confirms{at: map[string]time.Time{}, want: map[string]chan struct{}{}}
	ob := newOutbox(b, pool, sch, pgoutbox.WithOnPublished(confirmed.mark), pgoutbox.WithBatch(100))
	svc := startService(b, url, "outbox-bench")
	run(b, svc)
	n := b.N
	ctx := context.Background()

	b.ResetTimer()
	directTP := directThroughput(b, svc, n)
	directLat := directLatency(b, svc, min(n, 500))

	// Relay throughput: rows committed first, then the relay started.
	ids := write(b, pool, ob, svc, "bench.outbox", n, 100)
	confirmed.expect(ids)
	start := time.Now()
	if err := ob.Start(ctx, svc); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ob.Stop(context.Background()) }()
	confirmed.wait(b)
	relayTP := float64(n) / time.Since(start).Seconds()

	// Relay latency: one row per transaction, commit to confirm.
	lat := make([]time.Duration, 0, min(n, 500))
	for range cap(lat) {
		var id string
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			id, err = ob.Publish(ctx, tx, svc, map[string]int{"seq": 1}, "bench.outbox")
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		committed := time.Now()
		confirmed.expect([]string{id})
		confirmed.wait(b)
		lat = append(lat, confirmed.get(id).Sub(committed))
	}
	b.StopTimer()
	relayLat := percentiles(lat)
	b.ReportMetric(directTP, "direct-msg/s")
	b.ReportMetric(relayTP, "relay-msg/s")
	b.ReportMetric(relayTP/directTP, "relay/direct-throughput")
	b.ReportMetric(float64(directLat[0].Microseconds()), "direct-p50-µs")
	b.ReportMetric(float64(directLat[1].Microseconds()), "direct-p99-µs")
	b.ReportMetric(float64(relayLat[0].Microseconds()), "relay-p50-µs")
	b.ReportMetric(float64(relayLat[1].Microseconds()), "relay-p99-µs")
	b.ReportMetric(float64(relayLat[0])/float64(directLat[0]), "relay/direct-p50")
	b.ReportMetric(0, "ns/op")
}

func directThroughput(b *testing.B, svc *hato.Service, n int) float64 {
	ctx := context.Background()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if err := svc.Publish(ctx, map[string]int{"seq": i}, "bench.direct"); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

func directLatency(b *testing.B, svc *hato.Service, n int) [2]time.Duration {
	lat := make([]time.Duration, 0, n)
	for i := range n {
		t0 := time.Now()
		if err := svc.Publish(context.Background(), map[string]int{"seq": i}, "bench.direct"); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	return percentiles(lat)
}

func percentiles(d []time.Duration) [2]time.Duration {
	slices.Sort(d)
	return [2]time.Duration{d[len(d)/2], d[len(d)*99/100]}
}

// confirms records when the relay saw each message confirmed.
type confirms struct {
	mu      sync.Mutex
	at      map[string]time.Time
	want    map[string]chan struct{}
	pending int
	all     chan struct{}
}

func (c *confirms) expect(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = len(ids)
	c.all = make(chan struct{})
	for _, id := range ids {
		if _, ok := c.at[id]; ok {
			c.pending--
		}
		c.want[id] = c.all
	}
	if c.pending == 0 {
		close(c.all)
	}
}

func (c *confirms) mark(id string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.at[id]; dup {
		return
	}
	c.at[id] = now
	if ch, ok := c.want[id]; ok && ch == c.all {
		c.pending--
		if c.pending == 0 {
			close(c.all)
		}
	}
}

func (c *confirms) wait(b *testing.B) {
	c.mu.Lock()
	all := c.all
	c.mu.Unlock()
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatal("relay did not confirm every message")
	}
}

func (c *confirms) get(id string) time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at[id] }

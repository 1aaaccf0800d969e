package dedupetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

// BenchStore measures, for b.N new messages, what a route with Dedupe asks
// of store per message (Claim, then Record) against the in-memory store
// (Seen, then Record), in the same run, and reports both in µs per message
// and their ratio. Sequential: the added latency of one message.
func BenchStore(b *testing.B, store hato.DedupeClaimer) {
	ctx := context.Background()
	mem := hato.NewMemoryDedupeStore(0)
	run := b.N
	prefix := fmt.Sprintf("bench-%d/", time.Now().UnixNano())
	b.ResetTimer()
	t0 := time.Now()
	for i := range run {
		k := fmt.Sprint(prefix, i)
		if _, err := mem.Seen(ctx, k); err != nil {
			b.Fatal(err)
		}
		if err := mem.Record(ctx, k, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	memPer := time.Since(t0) / time.Duration(run)
	t0 = time.Now()
	for i := range run {
		k := fmt.Sprint(prefix, i)
		if _, err := store.Claim(ctx, k, "bench", 30*time.Second); err != nil {
			b.Fatal(err)
		}
		if err := store.Record(ctx, k, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	storePer := time.Since(t0) / time.Duration(run)
	b.StopTimer()
	b.ReportMetric(float64(memPer.Nanoseconds())/1e3, "memory-µs/msg")
	b.ReportMetric(float64(storePer.Nanoseconds())/1e3, "store-µs/msg")
	b.ReportMetric(float64(storePer)/float64(memPer), "store/memory")
	b.ReportMetric(0, "ns/op")
}

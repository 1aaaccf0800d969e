package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hato-go/hato/test/bench/internal/results"
	"github.com/hato-go/hato/test/brokertest"
)

// runSoak is -mode soak: examples/amqp-example in its own process forwards
// -rate msg/s (default 2 000) for -duration (default 10m) while its VmRSS
// is sampled every -sample (10 s). After a warm-up (the first fifth, at
// most a minute) RSS should stay within ±10 % of its median: reported,
// never asserted. Every message must arrive exactly once.
func runSoak(ctx context.Context, o options) int {
	if err := soak(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		return 1
	}
	return 0
}

type rssSample struct {
	at  time.Duration
	kb  int64
	lda string
}

func soak(ctx context.Context, o options) error {
	load := loadavg()
	logf("building the node binaries")
	bins, err := buildBinaries()
	if err != nil {
		return err
	}
	defer bins.remove()
	u, cleanup, err := brokertest.SetupVhost("bench-soak")
	if err != nil {
		return err
	}
	defer cleanup()
	d, err := newDriver(u)
	if err != nil {
		return err
	}
	defer d.close()
	p := &procImpl{name: "hato", bin: bins.example, readyLine: "service started"}
	if err := p.Start(ctx, u, "", "", ""); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = p.Stop(sctx)
	}()
	total := int(o.duration.Seconds() * float64(o.rate))
	tr := &tracking{sent: make([]atomic.Int64, total), recv: make([]atomic.Int64, total), count: make([]atomic.Int32, total)}
	stop, err := d.consumeKey(tr, "example.response")
	if err != nil {
		return err
	}
	defer stop()
	ph := newPhase(0, total)
	tr.cur.Store(ph)

	var samples []rssSample
	sampled := make(chan struct{})
	quit := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(sampled)
		tick := time.NewTicker(o.sample)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				s := rssSample{at: time.Since(start), kb: rssKB(p.PID()), lda: loadavg()}
				samples = append(samples, s)
				logf("  soak %s: RSS %.1f MiB, load %s", s.at.Round(time.Second), float64(s.kb)/1024, s.lda)
			}
		}
	}()
	logf("soak: %d msg/s for %s (RSS every %s)", o.rate, o.duration, o.sample)
	err = d.paced(ctx, tr, func(int) string { return "example.topic" }, 0, total, o.rate, strings.Repeat("x", o.pad))
	if err == nil {
		err = d.wait(ctx, ph, p, o.stall)
	}
	close(quit)
	<-sampled
	if err != nil {
		return err
	}
	lats := make([]time.Duration, 0, total)
	missing, dups := 0, 0
	for i := range total {
		lats = append(lats, time.Duration(tr.recv[i].Load()-tr.sent[i].Load()))
		switch c := tr.count[i].Load(); {
		case c == 0:
			missing++
		case c > 1:
			dups += int(c - 1)
		}
	}
	var l latencyStats
	l.fill(lats)
	printSoak(o, d.brokerVersion, samples, l, total, missing, dups)
	if err := writeResults(o, results.CaptureEnv(d.brokerVersion, load), soakFile(o, samples, l, total, missing, dups)); err != nil {
		return err
	}
	if missing > 0 || dups > 0 {
		return fmt.Errorf("%w: %d missing, %d duplicated", errLost, missing, dups)
	}
	return nil
}

func printSoak(o options, broker string, samples []rssSample, l latencyStats, total, missing, dups int) {
	fmt.Printf("\nsoak benchmark (RabbitMQ %s, examples/amqp-example in its own process, %d msg/s for %s, GOMAXPROCS=%d)\n",
		broker, o.rate, o.duration, gomaxprocs())
	fmt.Printf("latency: p50 %s p99 %s p99.9 %s max %s; %d published, %d missing, %d duplicated\n",
		fmtDur(l.P50), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max), total, missing, dups)
	warm := min(time.Minute, o.duration/5)
	var kb []float64
	for _, s := range samples {
		if s.at >= warm {
			kb = append(kb, float64(s.kb))
		}
	}
	if len(kb) == 0 {
		fmt.Println("RSS: no sample after the warm-up")
		return
	}
	med := median(kb)
	lo, hi := slices.Min(kb), slices.Max(kb)
	flat := lo >= 0.9*med && hi <= 1.1*med
	fmt.Printf("RSS after %s warm-up (%d samples): median %.1f MiB, min %.1f (%+.1f%%), max %.1f (%+.1f%%): flat ±10%%: %v\n",
		warm, len(kb), med/1024, lo/1024, (lo/med-1)*100, hi/1024, (hi/med-1)*100, flat)
}

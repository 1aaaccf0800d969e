// Command baseline-node is the hand-written amqp091-go forwarder of
// test/bench/internal/baseline in its own process, the yardstick of
// `go run ./test/bench -mode process`: it consumes example.topic and
// forwards every message's data to example.response, like
// examples/amqp-example. It reads the broker URL from AMQP_URL, prints
// "ready" on stderr once it consumes, and stops gracefully on SIGINT or
// SIGTERM. HATO_CPUPROFILE, HATO_BLOCKPROFILE and HATO_MUTEXPROFILE write
// profiles (see test/bench/internal/prof).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hato-go/hato/test/bench/internal/baseline"
	"github.com/hato-go/hato/test/bench/internal/prof"
)

func main() {
	os.Exit(run())
}

func run() int {
	stopProf := prof.Start()
	defer stopProf()
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var f baseline.Forwarder
	gaps := prof.NewGaps() // HATO_GAPS: handler start/return times
	if gaps != nil {
		f.Gaps = gaps
		defer gaps.Report(os.Stderr)
	}
	if err := f.Start(ctx, url, "node", "example.topic", "example.response"); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-node:", err)
		return 1
	}
	fmt.Fprintln(os.Stderr, "ready")
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil && f.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Stop(sctx); err != nil {
		fmt.Fprintln(os.Stderr, "baseline-node:", err)
		return 3
	}
	return 0
}

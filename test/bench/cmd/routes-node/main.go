// Command routes-node is a hato node with many routes, for
// `go run ./test/bench -mode routes`: -routes R subscriptions to the
// distinct keys bench.routes.0 … bench.routes.<R-1> (default options, so
// each with its dead-letter queue), each forwarding its message's data to
// bench.routes.out. It reads the broker URL from AMQP_URL and logs
// "service started" (zap, stderr) once every route consumes. With
// HATO_IDLEPROFILE=prefix it writes goroutine and heap profiles of the idle
// node 5 s after it started (see prof.Idle). On SIGUSR1 it runs
// debug.FreeOSMemory, so the bench can read the idle RSS without the
// start-up garbage, and with HATO_IDLEPROFILE writes the profiles again.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/bench/internal/prof"
)

func main() {
	prof.IdleRate()
	routes := flag.Int("routes", 10000, "number of routes")
	flag.Parse()
	freeOnSignal(*routes)
	stopProf := prof.Start()
	svc, err := hato.New("bench-routes")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := range *routes {
		key := fmt.Sprintf("bench.routes.%d", i)
		if err := hato.Subscribe(svc, key, func(ctx context.Context, msg *hato.Message[any]) error {
			return svc.Publish(ctx, msg.Data, "bench.routes.out")
		}, hato.HandlerName(fmt.Sprintf("route_%d", i))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	svc.OnStarted(func(context.Context) error {
		go prof.Idle(5*time.Second, *routes)
		return nil
	})
	err = svc.Run(context.Background())
	stopProf()
	if err != nil {
		fmt.Fprintln(os.Stderr, "routes-node:", err)
	}
	os.Exit(hato.ExitCode(err))
}

// freeOnSignal runs debug.FreeOSMemory on every SIGUSR1, then, with
// HATO_IDLEPROFILE, writes a snapshot (prof.Snapshot, tagged -usr1-N).
func freeOnSignal(routes int) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for n := 1; ; n++ {
			<-sig
			debug.FreeOSMemory()
			prof.Snapshot(fmt.Sprintf("-usr1-%d", n), routes)
		}
	}()
}

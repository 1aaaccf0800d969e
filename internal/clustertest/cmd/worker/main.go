// Command worker is one hato process of a service for the cluster tests
// (internal/clustertest): it consumes a competing quorum queue and prints
// "handled <id>" on stdout for every message its handler finished
// ("handled <id> redelivered" for a redelivery), "ready" once started. It reads the broker URLs from AMQP_URL (comma-separated)
// and runs until SIGTERM/SIGINT, or until the test kills it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hato-go/hato"
)

func main() {
	service := flag.String("service", "cluster-worker", "service name (one competing queue per service and key)")
	key := flag.String("key", "cluster.work", "routing key")
	work := flag.Duration("work", 0, "time each handler takes")
	concurrency := flag.Int("concurrency", 4, "handlers at once")
	flag.Parse()
	if err := run(*service, *key, *work, *concurrency); err != nil {
		log.Fatal(err)
	}
}

func run(service, key string, work time.Duration, concurrency int) error {
	svc, err := hato.New(service,
		hato.WithHeartbeat(2*time.Second),
		hato.WithDialTimeout(3*time.Second),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}))
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	emit := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(out, line)
		_ = out.Flush()
	}
	err = hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[map[string]string]) error {
		if work > 0 {
			select {
			case <-time.After(work):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		line := "handled " + m.Data["id"]
		if m.Redelivered {
			line += " redelivered"
		}
		emit(line)
		return nil
	}, hato.QuorumQueue(), hato.Concurrency(concurrency))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := svc.Start(startCtx); err != nil {
		return err
	}
	emit("ready")
	select {
	case <-ctx.Done():
	case <-svc.Failed():
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelStop()
	return svc.Stop(stopCtx)
}

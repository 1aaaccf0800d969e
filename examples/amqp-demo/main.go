// Command amqp-demo drives the amqp-example node from outside: it publishes
// a message to "example.topic" every second and prints what comes back on
// "example.response". It reads AMQP_URL like the node; -n stops after n
// round trips (0 runs until interrupted).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hato-go/hato"
)

func main() {
	n := flag.Int("n", 0, "stop after n round trips (0: run until interrupted)")
	every := flag.Duration("every", time.Second, "publish interval")
	flag.Parse()

	svc, err := hato.New("amqp-demo")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var received atomic.Int64
	done := make(chan struct{})
	err = hato.Subscribe(svc, "example.response", func(ctx context.Context, msg *hato.Message[map[string]any]) error {
		rtt := "not ours: no sent time"
		if sent, err := time.Parse(time.RFC3339Nano, fmt.Sprint(msg.Data["sent"])); err == nil {
			rtt = "round trip " + time.Since(sent).Round(time.Microsecond).String()
		}
		fmt.Printf("<- example.response  %v  (from %s, %s)\n", msg.Data, msg.Service.Name, rtt)
		if int(received.Add(1)) == *n {
			close(done)
		}
		return nil
	}, hato.NotCompeting(), hato.HandlerName("print_response"))
	if err != nil {
		log.Fatal(err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := svc.Start(startCtx); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = svc.Stop(context.Background()) }()

	tick := time.NewTicker(*every)
	defer tick.Stop()
	for i := 1; *n == 0 || i <= *n; i++ {
		data := map[string]any{"n": i, "sent": time.Now().Format(time.RFC3339Nano)}
		// Mandatory: until the node has declared its queue, nothing would
		// receive the message; say so and try again.
		err := svc.Publish(ctx, data, "example.topic", hato.Mandatory())
		switch {
		case errors.Is(err, hato.ErrUnroutable):
			fmt.Println("   (no queue bound to example.topic yet: is the amqp-example node running?)")
			i--
		case err != nil:
			fmt.Fprintln(os.Stderr, "publish:", err)
			return
		default:
			fmt.Printf("-> example.topic     %v\n", data)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		fmt.Fprintf(os.Stderr, "only %d of %d responses arrived\n", received.Load(), *n)
		os.Exit(1)
	}
}

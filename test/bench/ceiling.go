package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/test/bench/internal/results"
	"github.com/hato-go/hato/test/brokertest"
)

// ceilingRow is one line of the ceiling report.
type ceilingRow struct {
	what          string
	rate, against float64
	againstWhat   string
	target        float64
	load          string
}

// runCeiling is -mode ceiling, in this process:
//
//  1. 64 goroutines each calling svc.Publish outside a handler (it returns
//     once confirmed), N messages in all, against 64 goroutines publishing
//     by hand on one amqp091-go confirm-mode channel, each waiting for its
//     own deferred confirm (the same 64 in flight);
//  2. a route with Concurrency(32) whose handler waits 5 ms, against the
//     ideal 32 / 5 ms = 6 400 msg/s.
func runCeiling(ctx context.Context, o options) int {
	u, cleanup, err := brokertest.SetupVhost("bench-ceiling")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer cleanup()
	d, err := newDriver(u)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer d.close()
	env := results.CaptureEnv(d.brokerVersion, loadavg())
	var rows []ceilingRow
	for round := 1; round <= o.rounds; round++ {
		logf("ceiling round %d/%d: publish, load %s", round, o.rounds, loadavg())
		hr, br, err := publishCeiling(ctx, d, u, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
			return 1
		}
		rows = append(rows, ceilingRow{"Publish, 64 goroutines, outside handlers", hr, br, "hand-written deferred confirms", 0.9, loadavg()})
		logf("ceiling round %d/%d: Concurrency(32) + 5 ms handler", round, o.rounds)
		cr, err := concurrencyCeiling(ctx, d, u, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
			return 1
		}
		rows = append(rows, ceilingRow{"route Concurrency(32), handler waits 5 ms", cr, 32 / 0.005, "32 / 5 ms", 0.8, loadavg()})
		// What 32 goroutines sleeping 5 ms each achieve here, without a
		// broker: the timer overshoot of this (loaded) host.
		rows = append(rows, ceilingRow{"  reference: 32 goroutines sleeping 5 ms, no broker", sleepCeiling(max(1000, o.n/4)), 32 / 0.005, "32 / 5 ms", 0, loadavg()})
	}
	fmt.Printf("\nceiling benchmark (RabbitMQ %s, N=%d per measurement, %d rounds, GOMAXPROCS=%d)\n", d.brokerVersion, o.n, o.rounds, gomaxprocs())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\thato msg/s\tagainst\tmsg/s\tratio\ttarget\tload1")
	for _, r := range rows {
		target := "-"
		if r.target > 0 {
			target = fmt.Sprintf("≥ %.2f", r.target)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.0f\t%.2f\t%s\t%s\n", r.what, r.rate, r.againstWhat, r.against, r.rate/r.against, target, r.load)
	}
	_ = tw.Flush()
	if err := writeResults(o, env, ceilingFile(rows)); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// publishCeiling measures both publishers on a key bound to a durable queue
// (purged after each).
func publishCeiling(ctx context.Context, d *driver, u string, o options) (hatoRate, baseRate float64, err error) {
	ch, err := d.sub.Channel()
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = ch.Close() }()
	const key, queue = "bench.ceiling.publish", "bench-ceiling-publish"
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return 0, 0, err
	}
	if err := ch.QueueBind(queue, key, "amq.topic", false, nil); err != nil {
		return 0, 0, err
	}
	pad := strings.Repeat("x", o.pad)

	svc, err := hato.New("bench-ceiling-pub", hato.WithURL(u))
	if err != nil {
		return 0, 0, err
	}
	// A service needs a route to start; this one never gets a message.
	_ = hato.Subscribe(svc, "bench.ceiling.idle", func(context.Context, *hato.Message[any]) error { return nil })
	if err := svc.Start(ctx); err != nil {
		return 0, 0, err
	}
	hatoRate, err = run64(o.n, func(i int) error {
		return svc.Publish(ctx, payload{ID: int64(i), TS: time.Now().UnixNano(), Pad: pad}, key)
	})
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = joinErr(err, svc.Stop(sctx))
	if err != nil {
		return 0, 0, err
	}
	if _, err := ch.QueuePurge(queue, false); err != nil {
		return 0, 0, err
	}

	conn, err := dial(u, "bench-ceiling-baseline")
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = conn.Close() }()
	pch, err := conn.Channel()
	if err != nil {
		return 0, 0, err
	}
	if err := pch.Confirm(false); err != nil {
		return 0, 0, err
	}
	svcUUID := newUUID4()
	baseRate, err = run64(o.n, func(i int) error {
		now := time.Now()
		msgUUID := svcUUID + "." + newUUID4()
		body, err := envelope.JSON.Build(envelope.Build{
			Service: envelope.Service{Name: "bench-ceiling-baseline", UUID: svcUUID},
			Topic:   key, MessageUUID: msgUUID, Time: now,
		}, payload{ID: int64(i), TS: now.UnixNano(), Pad: pad}, envelope.Options{})
		if err != nil {
			return err
		}
		dc, err := pch.PublishWithDeferredConfirmWithContext(ctx, "amq.topic", key, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: msgUUID, Timestamp: now, Body: body,
		})
		if err != nil {
			return err
		}
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			return fmt.Errorf("confirm: ack=%v %v", ok, err)
		}
		return nil
	})
	if _, perr := ch.QueuePurge(queue, false); perr != nil && err == nil {
		err = perr
	}
	return hatoRate, baseRate, err
}

func joinErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// run64 runs publish for ids 0..n-1 from 64 goroutines and returns the rate.
func run64(n int, publish func(i int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := publish(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), first
}

// concurrencyCeiling measures a Concurrency(32) route whose handler waits
// 5 ms: handled per second between the 10th and the 90th percentile of
// completions (start-up and tail excluded), N/4 messages.
func concurrencyCeiling(ctx context.Context, d *driver, u string, o options) (float64, error) {
	n := max(1000, o.n/4)
	done := make([]atomic.Int64, n)
	var count atomic.Int64
	t0 := time.Now()
	svc, err := hato.New("bench-ceiling-conc", hato.WithURL(u))
	if err != nil {
		return 0, err
	}
	const key = "bench.ceiling.conc"
	if err := hato.Subscribe(svc, key, func(ctx context.Context, msg *hato.Message[any]) error {
		time.Sleep(5 * time.Millisecond)
		c := count.Add(1)
		if c <= int64(n) {
			done[c-1].Store(int64(time.Since(t0)))
		}
		return nil
	}, hato.Concurrency(32)); err != nil {
		return 0, err
	}
	if err := svc.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = svc.Stop(sctx)
	}()
	tr := &tracking{sent: make([]atomic.Int64, n)}
	if err := d.blast(tr, key, 0, d.buildAll(key, 0, n, strings.Repeat("x", o.pad))); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for count.Load() < int64(n) {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("concurrency ceiling: %d of %d handled after 2 minutes", count.Load(), n)
		}
		if err := svc.Err(); err != nil {
			return 0, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	lo, hi := n/10, n*9/10
	return float64(hi-lo) / time.Duration(done[hi].Load()-done[lo].Load()).Seconds(), nil
}

// sleepCeiling is the rate of n 5 ms sleeps spread over 32 goroutines.
func sleepCeiling(n int) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 32 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

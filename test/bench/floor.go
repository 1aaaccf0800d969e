package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/test/brokertest"
)

// floorResult is one topology-floor run: the routes' topology set up by
// hand-written amqp091-go, as fast as the broker allows.
type floorResult struct {
	Routes   int           `json:"routes"`
	Conns    int           `json:"connections"`
	Parallel int           `json:"parallel"`
	NoWait   bool          `json:"nowait"`
	Took     time.Duration `json:"took_ns"`
	Err      string        `json:"error,omitempty"`
}

// floorChannels is how many channels the floor opens on one connection:
// RabbitMQ's default channel_max (2047), which caps hato's consuming
// connections too.
const floorChannels = 2047

// runFloor measures the broker's floor for routes routes in a fresh vhost:
// what hato's consumers declare, done by amqp091-go alone, each route on
// its own channel: channel.open, basic.qos (per consumer 100, then global
// 400, hato's defaults), queue.declare (durable, x-expires 24 h),
// queue.bind to amq.topic, queue.declare of its dead-letter queue
// (durable), basic.consume. The connections (one per 2047 channels, as
// hato's pool ends up with) are dialed before the clock starts; parallel
// routes are set up at once (0: all of them, as hato does). With noWait the
// bind and the dead-letter declaration do not wait for their replies
// (what hato could skip; a failure then closes the channel later).
func runFloor(ctx context.Context, routes, parallel int, noWait bool) floorResult {
	conns := (routes + floorChannels - 1) / floorChannels
	if parallel <= 0 || parallel > routes {
		parallel = routes
	}
	res := floorResult{Routes: routes, Conns: conns, Parallel: parallel, NoWait: noWait}
	u, cleanup, err := brokertest.SetupVhost("bench-floor")
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer cleanup()
	cs := make([]*amqp.Connection, 0, conns)
	defer func() {
		for _, c := range cs {
			_ = c.Close()
		}
	}()
	for i := range conns {
		c, err := dial(u, "bench-floor-"+strconv.Itoa(i))
		if err != nil {
			res.Err = err.Error()
			return res
		}
		cs = append(cs, c)
	}
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range parallel {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= routes {
					return
				}
				if err := floorRoute(cs[i%conns], i, noWait); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	res.Took = time.Since(start)
	if firstErr != nil {
		res.Err = firstErr.Error()
	}
	return res
}

// floorRoute sets up route i on a channel of conn, leaving it consuming.
func floorRoute(conn *amqp.Connection, i int, noWait bool) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("route %d: channel: %w", i, err)
	}
	q := "bench-floor-" + strconv.Itoa(i)
	steps := []func() error{
		func() error { return ch.Qos(100, 0, false) },
		func() error { return ch.Qos(400, 0, true) },
		func() error {
			_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-expires": int64(86400000)})
			return err
		},
		func() error { return ch.QueueBind(q, "bench.routes."+strconv.Itoa(i), "amq.topic", noWait, nil) },
		func() error {
			if noWait {
				_, err := ch.QueueDeclare(q+".dlq", true, false, false, true, nil)
				return err
			}
			_, err := ch.QueueDeclare(q+".dlq", true, false, false, false, nil)
			return err
		},
		func() error {
			d, err := ch.Consume(q, "floor-"+strconv.Itoa(i), false, false, false, false, nil)
			if err == nil {
				go func() {
					for range d {
					}
				}()
			}
			return err
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("route %d: %w", i, err)
		}
	}
	return nil
}

func printFloor(rs []routesResult, f floorResult) {
	nw := ""
	if f.NoWait {
		nw = ", bind/dead-letter declare no-wait"
	}
	if f.Err != "" {
		fmt.Printf("\nbroker floor (%d routes, %d connections, %d at once%s): FAILED after %s: %s\n", f.Routes, f.Conns, f.Parallel, nw, fmtDur(f.Took), f.Err)
		return
	}
	fmt.Printf("\nbroker floor: %d routes' topology by hand-written amqp091-go (%d connections dialed before, %d routes at once%s): %s",
		f.Routes, f.Conns, f.Parallel, nw, fmtDur(f.Took))
	for _, r := range rs {
		if r.Routes == f.Routes && r.Ready && f.Took > 0 {
			fmt.Printf("; hato ready in %s = %.2f× the floor", fmtDur(r.ReadyIn), float64(r.ReadyIn)/float64(f.Took))
		}
	}
	fmt.Println()
}

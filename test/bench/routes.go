package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/test/brokertest"
)

// routesResult is one routes-node run.
type routesResult struct {
	Routes    int           `json:"routes"`
	ReadyIn   time.Duration `json:"ready_ns"`
	Ready     bool          `json:"ready"`
	Failure   string        `json:"failure,omitempty"`
	Consumers int           `json:"consumers"`
	RSSKB     int64         `json:"rss_kb"`
	// RSSGCKB is VmRSS after the node ran debug.FreeOSMemory (on SIGUSR1):
	// the idle state the runtime's own periodic GC and scavenger reach
	// within minutes, without the start-up garbage of RSSKB.
	RSSGCKB int64 `json:"rss_gc_kb"`
	// RSSIdleKB is VmRSS at the end of -idle, nothing forced.
	RSSIdleKB int64 `json:"rss_idle_kb,omitempty"`
	// RSSTrafficKB is VmRSS after the latency phase (every route has
	// forwarded messages) and two actors.DefaultWorkerIdle periods, once the
	// node ran debug.FreeOSMemory: idle routes that have worked, against
	// RSSGCKB's that never did.
	RSSTrafficKB int64        `json:"rss_traffic_kb,omitempty"`
	Latency      latencyStats `json:"latency"`
	Missing      int          `json:"missing"`
	Dups         int          `json:"duplicates"`
	Load         string       `json:"loadavg"`
	Log          string       `json:"log"`
}

// runRoutes is -mode routes: a one-route node, then a node with -routes
// routes (distinct keys, dead-letter queues on), each its own process in a
// fresh vhost: time to ready, RSS per idle route beyond the one-route node,
// and latency with 0.1 message/s on every route for -duration. A node that
// never becomes ready is the measured result, not an error of the bench.
func runRoutes(ctx context.Context, o options) int {
	if o.floorOnly {
		printFloor(nil, runFloor(ctx, o.routes, o.floorPar, o.floorNoWait))
		return 0
	}
	env := runEnv()
	logf("building the node binaries")
	bins, err := buildBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer bins.remove()
	var out []routesResult
	for _, r := range []int{1, o.routes} {
		logf("routes node with %d routes, load %s", r, loadavg())
		res, err := routesRun(ctx, bins, r, o, r > 1)
		out = append(out, res)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
			printRoutes(out)
			return 1
		}
	}
	printRoutes(out)
	var fl *floorResult
	if o.floor {
		logf("broker floor for %d routes, load %s", o.routes, loadavg())
		f := runFloor(ctx, o.routes, o.floorPar, o.floorNoWait)
		printFloor(out, f)
		fl = &f
	}
	if err := writeResults(o, env, routesFile(out, fl)); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func printRoutes(rs []routesResult) {
	fmt.Println("\nroutes benchmark (each node its own process, fresh vhost; RSS = VmRSS 5 s after ready, or at the give-up;")
	fmt.Println("after GC = VmRSS once the node ran debug.FreeOSMemory: the idle state without start-up garbage; idle = at the end of -idle, nothing forced;")
	fmt.Println("after traffic = after GC again, idle for 12 s once the latency phase ended, every route having forwarded messages, beyond the one-route node after GC)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "routes\tready in\tconsumers\tRSS MiB\tKiB/route beyond 1\tafter GC\tafter traffic\tp50\tp99\tmax\tchecked\tload1")
	for _, r := range rs {
		ready := fmtDur(r.ReadyIn)
		if !r.Ready {
			ready = "NOT READY"
		}
		per := "-"
		if r.Routes > 1 && len(rs) > 0 && rs[0].Routes == 1 && r.RSSKB > 0 {
			per = fmt.Sprintf("%.1f", float64(r.RSSKB-rs[0].RSSKB)/float64(r.Routes-1))
		}
		perGC := "-"
		if r.Routes > 1 && len(rs) > 0 && rs[0].Routes == 1 && r.RSSGCKB > 0 && rs[0].RSSGCKB > 0 {
			perGC = fmt.Sprintf("%.1f", float64(r.RSSGCKB-rs[0].RSSGCKB)/float64(r.Routes-1))
		}
		if r.RSSIdleKB > 0 && r.Routes > 1 && rs[0].RSSIdleKB > 0 {
			perGC += fmt.Sprintf(" (idle %.1f)", float64(r.RSSIdleKB-rs[0].RSSIdleKB)/float64(r.Routes-1))
		}
		perTraffic := "-"
		if r.Routes > 1 && len(rs) > 0 && rs[0].Routes == 1 && r.RSSTrafficKB > 0 && rs[0].RSSGCKB > 0 {
			perTraffic = fmt.Sprintf("%.1f", float64(r.RSSTrafficKB-rs[0].RSSGCKB)/float64(r.Routes-1))
		}
		check := "-"
		if r.Latency.N > 0 {
			check = fmt.Sprintf("%d, missing %d dup %d", r.Latency.N, r.Missing, r.Dups)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Routes, ready, r.Consumers, float64(r.RSSKB)/1024, per, perGC, perTraffic,
			fmtDur(r.Latency.P50), fmtDur(r.Latency.P99), fmtDur(r.Latency.Max), check, r.Load)
	}
	_ = tw.Flush()
	for _, r := range rs {
		if r.Failure != "" {
			fmt.Printf("\n%d routes: %s\n", r.Routes, r.Failure)
		}
		fmt.Printf("%d routes: node log %s\n", r.Routes, r.Log)
	}
}

func routesRun(ctx context.Context, bins *binaries, routes int, o options, latency bool) (routesResult, error) {
	res := routesResult{Routes: routes, Load: loadavg()}
	u, cleanup, err := brokertest.SetupVhost("bench-routes")
	if err != nil {
		return res, err
	}
	defer cleanup()
	d, err := newDriver(u)
	if err != nil {
		return res, err
	}
	defer d.close()
	res.Log = filepath.Join(os.TempDir(), fmt.Sprintf("hato-bench-routes-%d-%s.log", routes, newUUID4()[:8]))
	n, err := startNode(fmt.Sprintf("routes-node(%d)", routes), bins.routes, []string{"-routes", strconv.Itoa(routes)},
		[]string{"AMQP_URL=" + u}, "service started", res.Log)
	if err != nil {
		return res, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = n.stop(sctx)
	}()
	res.ReadyIn, err = n.waitReady(ctx, o.readyTimeout)
	res.RSSKB = rssKB(n.pid())
	res.Consumers = countConsumers(u)
	if err != nil {
		// The measured result: report it, measure nothing more.
		res.Failure = err.Error()
		if e := n.err(); e != nil {
			res.Failure += "\n(node exited meanwhile: " + e.Error() + ")"
		}
		return res, nil
	}
	res.Ready = true
	time.Sleep(5 * time.Second) // let start-up garbage be collected
	res.RSSKB = rssKB(n.pid())
	if o.idle > 0 {
		res.RSSIdleKB = sampleIdle(ctx, n.pid(), res.Routes, o.idle)
	}
	if err := n.cmd.Process.Signal(syscall.SIGUSR1); err == nil {
		time.Sleep(2 * time.Second) // the node frees memory, then idles
		res.RSSGCKB = rssKB(n.pid())
	}
	if !latency {
		return res, nil
	}
	if err := routesLatency(ctx, d, n, &res, o); err != nil {
		return res, err
	}
	// Idle again: the routes' handler goroutines go after one to two
	// WorkerIdle periods.
	time.Sleep(2*actors.DefaultWorkerIdle + 2*time.Second)
	if err := n.cmd.Process.Signal(syscall.SIGUSR1); err == nil {
		time.Sleep(2 * time.Second)
		res.RSSTrafficKB = rssKB(n.pid())
	}
	return res, nil
}

// sampleIdle logs pid's VmRSS every 10 s for d and returns the last.
func sampleIdle(ctx context.Context, pid, routes int, d time.Duration) int64 {
	var kb int64
	for start := time.Now(); ; {
		kb = rssKB(pid)
		logf("  idle %d routes, %s: RSS %.1f MiB", routes, time.Since(start).Round(time.Second), float64(kb)/1024)
		if time.Since(start) >= d || ctx.Err() != nil {
			return kb
		}
		time.Sleep(10 * time.Second)
	}
}

// routesLatency publishes 0.1 message/s to every route (round robin) for
// o.duration and measures publish → forwarded message received.
func routesLatency(ctx context.Context, d *driver, n *node, res *routesResult, o options) error {
	rate := max(1, res.Routes/10)
	total := max(1, int(o.duration.Seconds()*float64(rate)))
	tr := &tracking{sent: make([]atomic.Int64, total), recv: make([]atomic.Int64, total), count: make([]atomic.Int32, total)}
	stop, err := d.consumeKey(tr, "bench.routes.out")
	if err != nil {
		return err
	}
	defer stop()
	ph := newPhase(0, total)
	tr.cur.Store(ph)
	pad := strings.Repeat("x", o.pad)
	logf("  latency: %d msg/s over %d routes for %s", rate, res.Routes, o.duration)
	if err := d.paced(ctx, tr, func(id int) string { return "bench.routes." + strconv.Itoa(id%res.Routes) }, 0, total, rate, pad); err != nil {
		return err
	}
	if err := d.wait(ctx, ph, nodeImpl{n}, o.stall); err != nil {
		res.Missing = int(ph.left.Load())
		return err
	}
	lats := make([]time.Duration, 0, total)
	for i := range total {
		lats = append(lats, time.Duration(tr.recv[i].Load()-tr.sent[i].Load()))
	}
	res.Latency.fill(lats)
	time.Sleep(200 * time.Millisecond)
	for i := range tr.count {
		switch c := tr.count[i].Load(); {
		case c == 0:
			res.Missing++
		case c > 1:
			res.Dups += int(c - 1)
		}
	}
	if res.Missing > 0 || res.Dups > 0 {
		return fmt.Errorf("%w: %d missing, %d duplicated", errLost, res.Missing, res.Dups)
	}
	return nil
}

// nodeImpl lets driver.wait watch a node process.
type nodeImpl struct{ n *node }

func (x nodeImpl) Name() string                                                { return x.n.name }
func (x nodeImpl) Start(context.Context, string, string, string, string) error { return nil }
func (x nodeImpl) Queues() []string                                            { return nil }
func (x nodeImpl) Err() error                                                  { return x.n.err() }
func (x nodeImpl) Stop(ctx context.Context) error                              { return x.n.stop(ctx) }

// consumeKey declares a queue bound to key on the driver's consuming
// connection and consumes it into tr until the returned stop is called.
func (d *driver) consumeKey(tr *tracking, key string) (stop func(), err error) {
	ch, err := d.sub.Channel()
	if err != nil {
		return nil, err
	}
	d.errs.watchClose("driver consuming channel", ch.NotifyClose(make(chan *amqp.Error, 1)))
	q := "bench-out-" + newUUID4()[:8]
	if _, err := ch.QueueDeclare(q, false, false, true, false, nil); err != nil {
		return nil, err
	}
	if err := ch.QueueBind(q, key, "amq.topic", false, nil); err != nil {
		return nil, err
	}
	deliveries, err := ch.Consume(q, "bench-driver", true, false, false, false, nil)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go d.consume(tr, deliveries, done)
	return func() { _ = ch.Close(); <-done }, nil
}

// countConsumers counts the consumers in the vhost of rawURL (rabbitmqctl).
func countConsumers(rawURL string) int {
	u, err := url.Parse(rawURL)
	if err != nil {
		return -1
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	if v, err := url.PathUnescape(vhost); err == nil {
		vhost = v
	}
	out, err := brokertest.Rabbitmqctl("list_consumers", "-q", "--no-table-headers", "-p", vhost, "queue_name")
	if err != nil {
		logf("  list_consumers: %v", err)
		return -1
	}
	c := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) != "" {
			c++
		}
	}
	return c
}

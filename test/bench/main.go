// Command bench is hato's forwarding benchmark (make bench).
//
// It measures the forwarding service of tomodachi's amqp-example (see
// examples/amqp-example) — subscribe to an input key, forward each
// message's data to an output key — implemented two ways, against the real
// broker, in one process:
//
//   - hato: hato.New + hato.Subscribe + svc.Publish with default options
//     (JSON envelope, prefetch 100/400, concurrency 1; no tracing
//     configured, messages without trace context), and variants:
//     hato/conc8 with hato.Concurrency(8); hato/prop, whose messages carry a
//     traceparent that hato propagates with no SDK configured (propagation
//     only); hato/otel, the same with a recording OpenTelemetry SDK (spans
//     through a batch processor to a discarding exporter, metrics into an
//     SDK meter provider);
//   - baseline: the same service written by hand on amqp091-go (see
//     baseline.go).
//
// A driver with its own connections publishes JSON envelopes to the input
// key and consumes the output key. For each implementation and round it
// measures throughput (N messages published as fast as the driver can,
// first publish to last forwarded message received) and latency at a fixed
// rate (publish → received, p50/p99/p99.9/max), and checks that every
// published id arrived exactly once. Implementations run interleaved, round
// after round, in one throw-away vhost with unique keys and queues per run.
//
// Flags: -n, -warmup, -rate, -duration, -rounds, -pad, -impl (a subset,
// e.g. -impl baseline,hato), -json FILE, -cpuprofile FILE, -stall. -json
// writes the results of any mode, with the machine (cores, memory, CPU), Go
// and RabbitMQ versions and load average, in the format of
// test/bench/results/ (package internal/results), from which make
// bench-doc renders docs/benchmarks.md. In a CPU
// profile every goroutine carries a label role=driver or role=svc-<impl>,
// so one implementation's cost can be isolated:
//
//	go run ./test/bench -cpuprofile /tmp/bench.prof
//	go tool pprof -tags /tmp/bench.prof
//	go tool pprof -tagfocus 'role=^svc-hato$' -top -cum /tmp/bench.prof
//
// Other modes (-mode; issue 10's goals, each reported, never asserted):
//
//   - process: the same measurement with each service in its own process:
//     examples/amqp-example (hato) and cmd/baseline-node (the hand-written
//     forwarder of internal/baseline), built once per run, each session in
//     a fresh vhost, this process driving; rate 1000/s and 3 rounds by
//     default. -profile DIR runs cmd/hato-node (the example plus profiles)
//     and writes CPU, block and mutex profiles, the node's log and, with
//     HATO_GAPS, how long the handler goroutine waits between messages;
//     -trace adds execution traces; -strace DIR attaches `strace -c -f`.
//     -ref REV (repeatable) adds hato as it was at git revision REV
//     (examples/amqp-example built from `git archive REV`) as implementation
//     hato@REV, interleaved with the others, to measure a change against the
//     code before it.
//   - routes: cmd/routes-node with -routes R routes (distinct keys, DLQs)
//     against a one-route node: time to ready, VmRSS per idle route (5 s
//     after ready; with -idle D sampled for D with nothing forced; and once
//     the node ran debug.FreeOSMemory), p99
//     at 0.1 msg/s per route for -duration, then VmRSS per route once the
//     routes that worked idled for 12 s (after debug.FreeOSMemory again);
//     a node that never becomes ready (-ready-timeout) is reported as the
//     result. Then the broker's floor
//     (-floor, on by default): the same topology set up by hand-written
//     amqp091-go, -floor-par routes at once (0: all), and hato's ready
//     time as a multiple of it.
//   - ceiling: in this process, 64 goroutines calling Publish outside
//     handlers against 64 goroutines publishing with amqp091-go deferred
//     confirms; a Concurrency(32) route with a 5 ms handler against 32/5 ms.
//   - soak: examples/amqp-example forwarding -rate (2000) msg/s for
//     -duration (10m), VmRSS sampled every -sample (10 s).
//
// It exits non-zero only on errors (lost or duplicated messages, timeouts,
// broker errors), never because a result is slow.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hato-go/hato/test/bench/internal/baseline"
	"github.com/hato-go/hato/test/bench/internal/results"
	"github.com/hato-go/hato/test/brokertest"
)

type options struct {
	n          int
	warmup     int
	rate       int
	duration   time.Duration
	rounds     int
	pad        int
	impls      []string
	jsonPath   string
	cpuProfile string
	stall      time.Duration
	// mode is inprocess (default), process, routes, ceiling or soak.
	mode         string
	profileDir   string
	straceDir    string
	trace        bool
	routes       int
	readyTimeout time.Duration
	idle         time.Duration // routes mode: sample the idle RSS this long, nothing forced
	floor        bool
	floorPar     int
	floorNoWait  bool
	floorOnly    bool
	sample       time.Duration
	// refs, in process mode, are git revisions whose examples/amqp-example
	// each runs as one more implementation, "hato@<ref>".
	refs []string
	set  map[string]bool // flags given on the command line
}

var modes = []string{"inprocess", "process", "routes", "ceiling", "soak"}

// modeDefaults adjusts the defaults of flags not given for the mode.
func (o *options) modeDefaults() {
	def := func(name string, apply func()) {
		if !o.set[name] {
			apply()
		}
	}
	switch o.mode {
	case "process":
		def("rate", func() { o.rate = 1000 })
		def("rounds", func() { o.rounds = 3 })
		def("impl", func() { o.impls = []string{"baseline", "hato"} })
	case "routes":
		def("duration", func() { o.duration = 30 * time.Second })
	case "soak":
		def("duration", func() { o.duration = 10 * time.Minute })
		def("rate", func() { o.rate = 2000 })
	}
}

var allImpls = []string{"baseline", "hato", "hato/conc8", "hato/prop", "hato/otel"}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var impls string
	flag.IntVar(&o.n, "n", 20000, "messages per throughput measurement")
	flag.IntVar(&o.warmup, "warmup", 1000, "warm-up messages before each implementation's measurements (discarded)")
	flag.IntVar(&o.rate, "rate", 2000, "publish rate of the latency measurement, msg/s")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "duration of the latency measurement")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds: every implementation is measured once per round, interleaved")
	flag.IntVar(&o.pad, "pad", 200, "bytes of padding in each message's data")
	flag.StringVar(&impls, "impl", strings.Join(allImpls, ","), "comma-separated implementations to run: "+strings.Join(allImpls, ", "))
	flag.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file (every mode; the format of test/bench/results/, see package internal/results)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.DurationVar(&o.stall, "stall", 20*time.Second, "fail a measurement when no message arrives for this long")
	flag.StringVar(&o.mode, "mode", "inprocess", "what to measure: "+strings.Join(modes, ", ")+" (see the package documentation)")
	flag.StringVar(&o.profileDir, "profile", "", "process mode: run test/bench/cmd/hato-node instead of the example and write CPU, block and mutex profiles of every node process to this directory")
	flag.StringVar(&o.straceDir, "strace", "", "process mode: attach `strace -c -f` to every node process from ready to stop and write its syscall counts to this directory")
	flag.BoolVar(&o.trace, "trace", false, "process mode with -profile: also write an execution trace of each node's first 8 s (go tool trace -pprof=sched FILE)")
	flag.IntVar(&o.routes, "routes", 10000, "routes mode: routes of the node")
	flag.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "routes mode: give up waiting for the node to be ready after this long")
	flag.BoolVar(&o.floor, "floor", true, "routes mode: also measure the broker's floor, the same topology by hand-written amqp091-go (see runFloor)")
	flag.DurationVar(&o.idle, "idle", 0, "routes mode: after the 5 s reading, also sample each node's idle RSS every 10 s for this long, nothing forced (the runtime's periodic GC comes after 2 minutes)")
	flag.IntVar(&o.floorPar, "floor-par", 0, "routes mode: routes the floor sets up at once (0: all)")
	flag.BoolVar(&o.floorNoWait, "floor-nowait", false, "routes mode: the floor binds and declares the dead-letter queue without waiting for the replies")
	flag.BoolVar(&o.floorOnly, "floor-only", false, "routes mode: measure the broker's floor only (no node)")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "soak mode: RSS sampling interval")
	flag.Func("ref", "process mode: also run examples/amqp-example as built from this git revision (implementation hato@REV; comma-separated or repeated for several), interleaved, to compare hato with an earlier hato", func(v string) error {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				o.refs = append(o.refs, r)
			}
		}
		return nil
	})
	flag.Parse()
	o.set = map[string]bool{}
	flag.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if !slices.Contains(modes, o.mode) {
		fmt.Fprintf(os.Stderr, "bench: unknown mode %q (have %s)\n", o.mode, strings.Join(modes, ", "))
		return 2
	}

	for _, name := range strings.Split(impls, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(allImpls, name) {
			fmt.Fprintf(os.Stderr, "bench: unknown implementation %q (have %s)\n", name, strings.Join(allImpls, ", "))
			return 2
		}
		if !slices.Contains(o.impls, name) {
			o.impls = append(o.impls, name)
		}
	}
	if o.mode == "process" && !o.set["impl"] {
		o.impls = nil
	}
	o.modeDefaults()
	if o.mode == "process" {
		o.impls = slices.DeleteFunc(o.impls, func(n string) bool { return n == "hato/conc8" })
		for _, ref := range o.refs {
			o.impls = append(o.impls, refImpl(ref))
		}
	}
	switch {
	case len(o.impls) == 0:
		fmt.Fprintln(os.Stderr, "bench: -impl selects nothing")
		return 2
	case o.n <= 0 || o.warmup < 0 || o.rate <= 0 || o.rounds <= 0 || o.pad < 0 || o.duration.Seconds()*float64(o.rate) < 1:
		fmt.Fprintln(os.Stderr, "bench: -n, -rate and -rounds must be positive, -rate × -duration at least 1 message; -warmup and -pad not negative")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}

	switch o.mode {
	case "process":
		return reportRun(measureProcess(ctx, o))
	case "routes":
		return runRoutes(ctx, o)
	case "ceiling":
		return runCeiling(ctx, o)
	case "soak":
		return runSoak(ctx, o)
	}

	url, cleanup, err := brokertest.SetupVhost("bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer cleanup()
	return reportRun(measure(ctx, url, o))
}

// reportRun prints what a forwarding measurement returned and its error.
func reportRun(rep *report, err error) int {
	o := rep.Options
	if len(rep.Results) > 0 {
		rep.print(os.Stdout)
		env := results.CaptureEnv(rep.Broker, rep.LoadStart)
		if werr := writeResults(o, env, rep.file()); werr != nil {
			fmt.Fprintln(os.Stderr, "bench:", werr)
			err = errors.Join(err, werr)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		return 1
	}
	return 0
}

// measure runs every round; it returns what was measured even on error.
func measure(ctx context.Context, url string, o options) (*report, error) {
	// The driver's goroutines (and the amqp091-go ones its connections
	// start) inherit this label; each service's get their own.
	ctx = pprof.WithLabels(ctx, pprof.Labels("role", "driver"))
	pprof.SetGoroutineLabels(ctx)
	rep := &report{Options: o, Started: time.Now(), LoadStart: loadavg()}
	defer func() { rep.LoadEnd = loadavg() }()
	d, err := newDriver(url)
	if err != nil {
		return rep, err
	}
	defer d.close()
	rep.Broker = d.brokerVersion
	for round := 1; round <= o.rounds; round++ {
		order := slices.Clone(o.impls)
		if round%2 == 0 {
			// Alternate the order so drift (broker GC, disk, caches) does
			// not always favour the same implementation.
			slices.Reverse(order)
		}
		for _, name := range order {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			logf("round %d/%d: %s", round, o.rounds, name)
			res, err := d.session(ctx, newImpl(name), round, o)
			rep.Results = append(rep.Results, res)
			if err != nil {
				return rep, fmt.Errorf("%s round %d: %w", name, round, err)
			}
		}
	}
	return rep, nil
}

func newImpl(name string) impl {
	switch name {
	case "baseline":
		return &baseline.Forwarder{}
	case "hato":
		return &hatoImpl{name: name, concurrency: 1}
	case "hato/conc8":
		return &hatoImpl{name: name, concurrency: 8}
	case "hato/prop":
		return &hatoImpl{name: name, concurrency: 1, tracing: tracePropagate}
	case "hato/otel":
		return &hatoImpl{name: name, concurrency: 1, tracing: traceRecord}
	}
	panic("unknown implementation " + name)
}

// impl is one implementation of the forwarding service.
type impl interface {
	Name() string
	// Start connects, declares the input queue bound to in, and returns
	// once it consumes.
	Start(ctx context.Context, url, tag, in, out string) error
	// Queues are the queues it declared, deleted after the run.
	Queues() []string
	// Err reports a failure of the running service (nil while healthy).
	Err() error
	// Stop stops it gracefully.
	Stop(ctx context.Context) error
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one implementation's measurements in one round.
type result struct {
	Impl  string `json:"impl"`
	Round int    `json:"round"`
	// Throughput is messages per second from the first publish to the last
	// forwarded message received.
	Throughput        float64 `json:"throughput_msg_per_s"`
	ThroughputSeconds float64 `json:"throughput_seconds"`
	// PublishRate is how fast the driver published (it must exceed
	// Throughput for the driver not to be the bottleneck).
	PublishRate float64 `json:"driver_publish_rate_msg_per_s"`
	// CPU per forwarded message during the throughput measurement: this
	// process (driver + service) and the broker.
	CPUSelfUsPerMsg   float64 `json:"cpu_process_us_per_msg"`
	CPUBrokerUsPerMsg float64 `json:"cpu_broker_us_per_msg,omitempty"`
	// CPUServiceUsPerMsg is the service process's CPU per forwarded
	// message, when it runs in its own process (CPUSelfUsPerMsg is then
	// the driver's).
	CPUServiceUsPerMsg float64 `json:"cpu_service_process_us_per_msg,omitempty"`
	// Load is the host's 1-minute load average when the session began.
	Load string `json:"loadavg"`
	// OtherLoad is the CPU (in cores) used by everything but this process
	// and the broker during the throughput measurement.
	OtherLoad  float64      `json:"other_load_cores"`
	Latency    latencyStats `json:"latency"`
	Published  int          `json:"published"`
	Missing    int          `json:"missing"`
	Duplicates int          `json:"duplicates"`
	Stray      int          `json:"stray"`
}

type latencyStats struct {
	N            int           `json:"n"`
	AchievedRate float64       `json:"achieved_rate_msg_per_s"`
	Mean         time.Duration `json:"mean_ns"`
	P50          time.Duration `json:"p50_ns"`
	P99          time.Duration `json:"p99_ns"`
	P999         time.Duration `json:"p999_ns"`
	Max          time.Duration `json:"max_ns"`
}

func (l *latencyStats) fill(lats []time.Duration) {
	l.N = len(lats)
	if len(lats) == 0 {
		return
	}
	slices.Sort(lats)
	var sum time.Duration
	for _, v := range lats {
		sum += v
	}
	l.Mean = sum / time.Duration(len(lats))
	l.P50 = quantile(lats, 0.50)
	l.P99 = quantile(lats, 0.99)
	l.P999 = quantile(lats, 0.999)
	l.Max = lats[len(lats)-1]
}

// quantile of sorted values, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

type summary struct {
	Impl               string        `json:"impl"`
	Rounds             int           `json:"rounds"`
	ThroughputMedian   float64       `json:"throughput_median_msg_per_s"`
	ThroughputBest     float64       `json:"throughput_best_msg_per_s"`
	P50, P99, P999, Mx time.Duration `json:"-"`
	P50ns              int64         `json:"p50_median_ns"`
	P99ns              int64         `json:"p99_median_ns"`
	P999ns             int64         `json:"p999_median_ns"`
	MaxNs              int64         `json:"max_median_ns"`
	CPUSelfUsPerMsg    float64       `json:"cpu_process_us_per_msg_median"`
	CPUServiceUsPerMsg float64       `json:"cpu_service_process_us_per_msg_median,omitempty"`
	CPUBrokerUsPerMsg  float64       `json:"cpu_broker_us_per_msg_median,omitempty"`
}

type report struct {
	Broker    string    `json:"broker_version"`
	Options   options   `json:"-"`
	Started   time.Time `json:"started"`
	LoadStart string    `json:"loadavg_start"`
	LoadEnd   string    `json:"loadavg_end"`
	Results   []result  `json:"results"`
	Summaries []summary `json:"summary"`
	// Ratio is hato's median throughput over the baseline's.
	Ratio     float64 `json:"ratio_hato_baseline_throughput,omitempty"`
	RatioBest float64 `json:"ratio_hato_baseline_throughput_best,omitempty"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(v []time.Duration) time.Duration {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}

// summarize computes the per-implementation medians over complete rounds.
func (r *report) summarize() {
	r.Summaries = nil
	for _, name := range r.Options.impls {
		var tp, cs, cb, csv []float64
		var p50, p99, p999, mx []time.Duration
		for _, res := range r.Results {
			if res.Impl != name || res.Latency.N == 0 {
				continue
			}
			tp = append(tp, res.Throughput)
			cs = append(cs, res.CPUSelfUsPerMsg)
			cb = append(cb, res.CPUBrokerUsPerMsg)
			csv = append(csv, res.CPUServiceUsPerMsg)
			p50 = append(p50, res.Latency.P50)
			p99 = append(p99, res.Latency.P99)
			p999 = append(p999, res.Latency.P999)
			mx = append(mx, res.Latency.Max)
		}
		if len(tp) == 0 {
			continue
		}
		s := summary{
			Impl: name, Rounds: len(tp),
			ThroughputMedian: median(tp), ThroughputBest: slices.Max(tp),
			P50: medianDur(p50), P99: medianDur(p99), P999: medianDur(p999), Mx: medianDur(mx),
			CPUSelfUsPerMsg: median(cs), CPUBrokerUsPerMsg: median(cb), CPUServiceUsPerMsg: median(csv),
		}
		s.P50ns, s.P99ns, s.P999ns, s.MaxNs = int64(s.P50), int64(s.P99), int64(s.P999), int64(s.Mx)
		r.Summaries = append(r.Summaries, s)
	}
	var base, h *summary
	for i := range r.Summaries {
		switch r.Summaries[i].Impl {
		case "baseline":
			base = &r.Summaries[i]
		case "hato":
			h = &r.Summaries[i]
		}
	}
	if base != nil && h != nil && base.ThroughputMedian > 0 {
		r.Ratio = h.ThroughputMedian / base.ThroughputMedian
		r.RatioBest = h.ThroughputBest / base.ThroughputBest
	}
}

func (r *report) print(w io.Writer) {
	r.summarize()
	o := r.Options
	broker := "RabbitMQ " + r.Broker
	if r.Broker == "" {
		broker = "RabbitMQ"
	}
	fmt.Fprintf(w, "\nforwarding benchmark (%s, N=%d, rate=%d/s for %s, %d rounds, GOMAXPROCS=%d)\n",
		broker, o.n, o.rate, o.duration, o.rounds, gomaxprocs())

	fmt.Fprintf(w, "host load average %s at start, %s at end\n", r.LoadStart, r.LoadEnd)
	if o.mode == "process" {
		fmt.Fprintln(w, "mode process: each node in its own process (hato = examples/amqp-example, baseline = test/bench/cmd/baseline-node), a fresh vhost per session")
	}
	fmt.Fprintln(w, "\nper round (during the throughput run: cpu = µs per forwarded message, this process [driver+service, or drv+svc processes] / broker;")
	fmt.Fprintln(w, "other = cores busy with anything else on the host, i.e. noise):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "round\timpl\tthroughput msg/s\tp50\tp99\tp99.9\tmax\tcpu proc/broker\tother\tload1\tchecked")
	for _, res := range r.Results {
		check := fmt.Sprintf("%d ok", res.Published)
		if res.Published == 0 || res.Missing > 0 || res.Duplicates > 0 || res.Stray > 0 {
			check = fmt.Sprintf("INCOMPLETE: missing %d dup %d stray %d", res.Missing, res.Duplicates, res.Stray)
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s / %.0f\t%.2f\t%s\t%s\n", res.Round, res.Impl, res.Throughput,
			fmtDur(res.Latency.P50), fmtDur(res.Latency.P99), fmtDur(res.Latency.P999), fmtDur(res.Latency.Max),
			fmtProcCPU(res.CPUSelfUsPerMsg, res.CPUServiceUsPerMsg), res.CPUBrokerUsPerMsg, res.OtherLoad, res.Load, check)
	}
	_ = tw.Flush()

	if len(r.Summaries) == 0 {
		return
	}
	fmt.Fprintln(w, "\nsummary (median over rounds; best throughput in brackets):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "impl\tthroughput msg/s\tp50\tp99\tp99.9\tmax\tcpu proc/broker")
	for _, s := range r.Summaries {
		fmt.Fprintf(tw, "%s\t%.0f (%.0f)\t%s\t%s\t%s\t%s\t%s / %.0f\n", s.Impl, s.ThroughputMedian, s.ThroughputBest,
			fmtDur(s.P50), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Mx), fmtProcCPU(s.CPUSelfUsPerMsg, s.CPUServiceUsPerMsg), s.CPUBrokerUsPerMsg)
	}
	_ = tw.Flush()
	if r.Ratio > 0 {
		target := "0.80"
		if o.mode == "process" {
			target = "0.95; p99 at 1 000 msg/s ≤ baseline + 1 ms"
		}
		fmt.Fprintf(w, "ratio hato/baseline throughput: %.2f (best/best %.2f)   (target ≥ %s)\n", r.Ratio, r.RatioBest, target)
	}
	r.printTracing(w)
	r.printRef(w)
}

// printRef compares hato with hato as built from each -ref.
func (r *report) printRef(w io.Writer) {
	by := map[string]summary{}
	for _, s := range r.Summaries {
		by[s.Impl] = s
	}
	h, ok := by["hato"]
	if !ok {
		return
	}
	for _, rev := range r.Options.refs {
		ref, ok := by[refImpl(rev)]
		if !ok || ref.ThroughputMedian <= 0 || ref.CPUServiceUsPerMsg <= 0 {
			continue
		}
		fmt.Fprintf(w, "ratio hato/%s throughput: %.3f (best/best %.3f), service cpu/msg %.3f, p99 %s against %s\n", ref.Impl,
			h.ThroughputMedian/ref.ThroughputMedian, h.ThroughputBest/ref.ThroughputBest,
			h.CPUServiceUsPerMsg/ref.CPUServiceUsPerMsg, fmtDur(h.P99), fmtDur(ref.P99))
	}
}

// printTracing compares the tracing variants with plain hato: throughput
// (median and best) and this process's CPU per message.
func (r *report) printTracing(w io.Writer) {
	by := map[string]summary{}
	for _, s := range r.Summaries {
		by[s.Impl] = s
	}
	h, ok := by["hato"]
	if !ok || h.ThroughputMedian <= 0 {
		return
	}
	for _, v := range []struct{ impl, what, target string }{
		{"hato/prop", "propagation only", ""},
		{"hato/otel", "recording SDK", "   (target ≥ 0.85)"},
	} {
		s, ok := by[v.impl]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "ratio %s/hato throughput (%s): %.3f (best/best %.3f), cpu/msg %.3f%s\n", v.impl, v.what,
			s.ThroughputMedian/h.ThroughputMedian, s.ThroughputBest/h.ThroughputBest, s.CPUSelfUsPerMsg/h.CPUSelfUsPerMsg, v.target)
	}
	// The same messages on the wire (a traceparent both ways): what the SDK
	// itself costs, without the broker's cost of the headers.
	if p, o := by["hato/prop"], by["hato/otel"]; p.ThroughputMedian > 0 && o.ThroughputMedian > 0 {
		fmt.Fprintf(w, "ratio hato/otel/hato/prop throughput (the SDK alone, same headers on the wire): %.3f (best/best %.3f), cpu/msg %.3f, broker cpu/msg %.0f / %.0f / %.0f µs (off / prop / otel)\n",
			o.ThroughputMedian/p.ThroughputMedian, o.ThroughputBest/p.ThroughputBest, o.CPUSelfUsPerMsg/p.CPUSelfUsPerMsg,
			h.CPUBrokerUsPerMsg, p.CPUBrokerUsPerMsg, o.CPUBrokerUsPerMsg)
	}
}

// MarshalJSON adds the run's parameters to the report.
func (r *report) MarshalJSON() ([]byte, error) {
	type plain report
	return json.Marshal(struct {
		*plain
		N        int     `json:"n"`
		Warmup   int     `json:"warmup"`
		Rate     int     `json:"rate"`
		Duration float64 `json:"duration_s"`
		Rounds   int     `json:"rounds"`
	}{(*plain)(r), r.Options.n, r.Options.warmup, r.Options.rate, r.Options.duration.Seconds(), r.Options.rounds})
}

// fmtProcCPU is the process CPU column: one figure in process, "drv+svc"
// when the service runs in its own process.
func fmtProcCPU(self, svc float64) string {
	if svc > 0 {
		return fmt.Sprintf("%.0f+%.0f", self, svc)
	}
	return fmt.Sprintf("%.0f", self)
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func newUUID4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}

// brokerPID is the pid of the local RabbitMQ VM (beam.smp; the oldest, not
// a node of the test cluster), or 0 when the broker is not visible in /proc
// (remote or in a container).
var brokerPID = findBroker()

func findBroker() int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	found := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && strings.TrimSpace(string(comm)) == "beam.smp" {
			cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			line := strings.ReplaceAll(string(cmd), "\x00", " ")
			// Not a node of scripts/cluster.sh's throw-away cluster
			// (hato-c1..3), which may run beside the default broker.
			if strings.Contains(line, "rabbit boot") && !strings.Contains(line, "hato-c") && (found == 0 || pid < found) {
				found = pid
			}
		}
	}
	return found
}

// hostBusy is the CPU seconds the host spent busy, all cores.
func hostBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / 100 // USER_HZ
}

// loadavg is the host's 1-minute load average, as text.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// procCPU is the user+system CPU seconds of pid.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

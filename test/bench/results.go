package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hato-go/hato/test/bench/internal/results"
	"github.com/hato-go/hato/test/brokertest"
)

// writeResults writes f to -json (nothing without the flag), with the
// machine it ran on: env captured when the run began, the load average
// now as its end.
func writeResults(o options, env results.Env, f results.File) error {
	if o.jsonPath == "" {
		return nil
	}
	f.Env = env
	f.Env.LoadEnd = loadavg()
	f.Mode = o.mode
	f.Command = "go run ./test/bench " + strings.Join(os.Args[1:], " ")
	if err := results.Write(o.jsonPath, f); err != nil {
		return fmt.Errorf("write -json: %w", err)
	}
	logf("results written to %s", o.jsonPath)
	return nil
}

// runEnv is the machine before a run, with the broker's version (read from
// a connection's server properties; empty when the broker is unreachable).
func runEnv() results.Env {
	v := ""
	if conn, err := dial(brokertest.BaseURL(), "bench-version"); err == nil {
		v, _ = conn.Properties["version"].(string)
		_ = conn.Close()
	}
	return results.CaptureEnv(v, loadavg())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// file is a forwarding run (inprocess or process mode) as results: per
// implementation its median throughput, p50 and p99 and CPU per message,
// and the ratios print reports; Raw is the whole report.
func (r *report) file() results.File {
	r.summarize()
	f := results.File{Title: "Forwarding in one process"}
	if r.Options.mode == "process" {
		f.Title = "Forwarding across processes"
	}
	for _, s := range r.Summaries {
		f.Metrics = append(f.Metrics,
			results.Metric{Name: "throughput (median)", Impl: s.Impl, Value: s.ThroughputMedian, Unit: "msg/s"},
			results.Metric{Name: fmt.Sprintf("p99 latency at %d msg/s", r.Options.rate), Impl: s.Impl, Value: ms(s.P99), Unit: "ms"})
		if s.CPUServiceUsPerMsg > 0 {
			f.Metrics = append(f.Metrics, results.Metric{Name: "service CPU per message", Impl: s.Impl, Value: s.CPUServiceUsPerMsg, Unit: "µs"})
		}
	}
	f.Metrics = append(f.Metrics, r.ratios()...)
	f.Raw, _ = json.Marshal(r)
	return f
}

// ratios are the report's comparisons: hato against the baseline, the
// tracing variants against plain hato.
func (r *report) ratios() []results.Metric {
	by := map[string]summary{}
	for _, s := range r.Summaries {
		by[s.Impl] = s
	}
	var out []results.Metric
	if r.Ratio > 0 {
		m := results.Metric{Name: "throughput hato / hand-written amqp091-go", Value: r.Ratio, Unit: "×", Target: "≥ 0.80"}
		if r.Options.mode == "process" {
			m.Target, m.Headline = "≥ 0.95", "forwarding throughput against the same service hand-written on amqp091-go, across processes"
		}
		out = append(out, m)
	}
	h := by["hato"]
	for _, v := range []struct{ impl, what, target, headline string }{
		{"hato/prop", "propagation only", "", ""},
		{"hato/otel", "recording SDK", "≥ 0.85", "forwarding throughput with a recording OpenTelemetry SDK against tracing off"},
	} {
		if s, ok := by[v.impl]; ok && h.ThroughputMedian > 0 {
			out = append(out, results.Metric{Name: "throughput " + v.impl + " / hato (" + v.what + ")",
				Value: s.ThroughputMedian / h.ThroughputMedian, Unit: "×", Target: v.target, Headline: v.headline})
		}
	}
	return out
}

// routesFile is a routes run as results.
func routesFile(rs []routesResult, fl *floorResult) results.File {
	f := results.File{Title: "Many routes"}
	if len(rs) < 2 || rs[0].Routes != 1 {
		return f
	}
	one, n := rs[0], rs[len(rs)-1]
	per := func(kb, base int64) float64 { return float64(kb-base) / float64(n.Routes-1) }
	impl := fmt.Sprintf("hato, %d routes", n.Routes)
	f.Metrics = append(f.Metrics, results.Metric{Name: "time to ready", Impl: impl, Value: n.ReadyIn.Seconds(), Unit: "s"},
		results.Metric{Name: "idle RSS per route, 5 s after ready", Impl: impl, Value: per(n.RSSKB, one.RSSKB), Unit: "KiB", Target: "≤ 19.5"},
		results.Metric{Name: "idle RSS per route after debug.FreeOSMemory", Impl: impl, Value: per(n.RSSGCKB, one.RSSGCKB), Unit: "KiB"})
	if n.RSSTrafficKB > 0 {
		f.Metrics = append(f.Metrics, results.Metric{Name: "RSS per route once every route worked", Impl: impl, Value: per(n.RSSTrafficKB, one.RSSGCKB), Unit: "KiB"})
	}
	f.Metrics = append(f.Metrics, results.Metric{Name: "p99 latency at 0.1 msg/s a route", Impl: impl, Value: ms(n.Latency.P99), Unit: "ms", Target: "≤ 10"})
	if fl != nil && fl.Err == "" && fl.Took > 0 && n.Ready {
		f.Metrics = append(f.Metrics, results.Metric{Name: "time to ready, the same topology by hand-written amqp091-go", Impl: "broker floor", Value: fl.Took.Seconds(), Unit: "s"},
			results.Metric{Name: "time to ready hato / broker floor", Value: n.ReadyIn.Seconds() / fl.Took.Seconds(), Unit: "×",
				Headline: fmt.Sprintf("time for %d routes to be ready against the broker's own floor for the same topology", n.Routes)})
	}
	f.Raw, _ = json.Marshal(struct {
		Nodes []routesResult `json:"nodes"`
		Floor *floorResult   `json:"floor,omitempty"`
	}{rs, fl})
	return f
}

// ceilingFile is a ceiling run as results: the median over rounds of each
// measurement and of its ratio.
func ceilingFile(rows []ceilingRow) results.File {
	f := results.File{Title: "Library ceiling"}
	type agg struct {
		rate, ratio []float64
		row         ceilingRow
	}
	var order []string
	by := map[string]*agg{}
	for _, r := range rows {
		a := by[r.what]
		if a == nil {
			a = &agg{row: r}
			by[r.what] = a
			order = append(order, r.what)
		}
		a.rate, a.ratio = append(a.rate, r.rate), append(a.ratio, r.rate/r.against)
	}
	for _, what := range order {
		a := by[what]
		name := strings.TrimSpace(what)
		target := ""
		if a.row.target > 0 {
			target = fmt.Sprintf("≥ %.2f", a.row.target)
		}
		f.Metrics = append(f.Metrics, results.Metric{Name: name + " (median)", Impl: "hato", Value: median(a.rate), Unit: "msg/s"},
			results.Metric{Name: name + " against " + a.row.againstWhat, Value: median(a.ratio), Unit: "×", Target: target})
	}
	f.Raw, _ = json.Marshal(rows)
	return f
}

// soakFile is a soak run as results.
func soakFile(o options, samples []rssSample, l latencyStats, total, missing, dups int) results.File {
	f := results.File{Title: "Memory under load"}
	warm := min(time.Minute, o.duration/5)
	var kb []float64
	for _, s := range samples {
		if s.at >= warm {
			kb = append(kb, float64(s.kb))
		}
	}
	impl := fmt.Sprintf("hato, %d msg/s for %s", o.rate, o.duration)
	if len(kb) > 0 {
		med := median(kb)
		f.Metrics = append(f.Metrics, results.Metric{Name: "RSS after the warm-up (median)", Impl: impl, Value: med / 1024, Unit: "MiB"},
			results.Metric{Name: "RSS lowest against the median", Impl: impl, Value: (slices.Min(kb)/med - 1) * 100, Unit: "%", Target: "≥ -10"},
			results.Metric{Name: "RSS highest against the median", Impl: impl, Value: (slices.Max(kb)/med - 1) * 100, Unit: "%", Target: "≤ +10"})
	}
	f.Metrics = append(f.Metrics, results.Metric{Name: "messages forwarded exactly once", Impl: impl, Value: float64(total - missing - dups)},
		results.Metric{Name: "p50 latency", Impl: impl, Value: ms(l.P50), Unit: "ms"},
		results.Metric{Name: "p99 latency", Impl: impl, Value: ms(l.P99), Unit: "ms"})
	return f
}

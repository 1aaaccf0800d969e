package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato/test/bench/internal/results"
)

func metric(t *testing.T, f results.File, name, impl string) results.Metric {
	t.Helper()
	for _, m := range f.Metrics {
		if m.Name == name && m.Impl == impl {
			return m
		}
	}
	t.Fatalf("no metric %q of %q in %+v", name, impl, f.Metrics)
	return results.Metric{}
}

func TestForwardingResults(t *testing.T) {
	r := &report{Options: options{mode: "process", impls: []string{"baseline", "hato"}, rate: 1000, n: 20000, rounds: 1}}
	for _, res := range []result{
		{Impl: "baseline", Round: 1, Throughput: 10000, Latency: latencyStats{N: 1, P99: 2 * time.Millisecond}},
		{Impl: "hato", Round: 1, Throughput: 9000, CPUServiceUsPerMsg: 30, Latency: latencyStats{N: 1, P99: 3 * time.Millisecond}},
	} {
		r.Results = append(r.Results, res)
	}
	f := r.file()
	if m := metric(t, f, "throughput (median)", "hato"); m.Value != 9000 || m.Unit != "msg/s" {
		t.Errorf("hato throughput %+v", m)
	}
	if m := metric(t, f, "p99 latency at 1000 msg/s", "baseline"); m.Value != 2 || m.Unit != "ms" {
		t.Errorf("baseline p99 %+v", m)
	}
	ratio := metric(t, f, "throughput hato / hand-written amqp091-go", "")
	if ratio.Value != 0.9 || ratio.Target != "≥ 0.95" || ratio.Headline == "" {
		t.Errorf("ratio %+v", ratio)
	}
	var raw map[string]any
	if err := json.Unmarshal(f.Raw, &raw); err != nil || raw["n"] != float64(20000) || raw["results"] == nil {
		t.Errorf("raw report %s: %v", f.Raw, err)
	}
}

func TestRoutesResults(t *testing.T) {
	rs := []routesResult{
		{Routes: 1, Ready: true, RSSKB: 10000, RSSGCKB: 8000},
		{Routes: 1001, Ready: true, ReadyIn: 12 * time.Second, RSSKB: 30000, RSSGCKB: 18000, RSSTrafficKB: 28000,
			Latency: latencyStats{P99: 2 * time.Millisecond}},
	}
	f := routesFile(rs, &floorResult{Routes: 1001, Took: 10 * time.Second})
	impl := "hato, 1001 routes"
	if m := metric(t, f, "idle RSS per route, 5 s after ready", impl); m.Value != 20 {
		t.Errorf("KiB/route %+v", m)
	}
	if m := metric(t, f, "RSS per route once every route worked", impl); m.Value != 20 {
		t.Errorf("after traffic %+v", m)
	}
	if m := metric(t, f, "time to ready hato / broker floor", ""); m.Value != 1.2 || m.Headline == "" {
		t.Errorf("ready ratio %+v", m)
	}
}

func TestCeilingResultsAreMediansOverRounds(t *testing.T) {
	var rows []ceilingRow
	for _, rate := range []float64{80, 100, 90} {
		rows = append(rows, ceilingRow{what: "publish", rate: rate, against: 100, againstWhat: "by hand", target: 0.9})
	}
	f := ceilingFile(rows)
	if m := metric(t, f, "publish (median)", "hato"); m.Value != 90 {
		t.Errorf("median rate %+v", m)
	}
	if m := metric(t, f, "publish against by hand", ""); m.Value != 0.9 || m.Target != "≥ 0.90" {
		t.Errorf("median ratio %+v", m)
	}
}

func TestWrittenResultsLoad(t *testing.T) {
	dir := t.TempDir()
	o := options{mode: "ceiling", jsonPath: filepath.Join(dir, "ceiling.json")}
	env := results.CaptureEnv("3.10.8", "0.5")
	if err := writeResults(o, env, ceilingFile([]ceilingRow{{what: "x", rate: 1, against: 2}})); err != nil {
		t.Fatal(err)
	}
	fs, err := results.Load(dir)
	if err != nil || len(fs) != 1 {
		t.Fatalf("load: %v, %d files", err, len(fs))
	}
	f := fs[0]
	if f.Mode != "ceiling" || !strings.HasPrefix(f.Command, "go run ./test/bench") || f.Env.Cores == 0 ||
		f.Env.GoVersion == "" || f.Env.RabbitMQ != "3.10.8" || f.Env.LoadStart != "0.5" || f.Env.LoadEnd == "" {
		t.Errorf("written file %+v", f)
	}
}

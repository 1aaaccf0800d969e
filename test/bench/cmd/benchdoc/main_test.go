package main

import (
	"strings"
	"testing"

	"github.com/hato-go/hato/test/bench/internal/results"
)

// TestGeneratedDocsUpToDate fails when docs/benchmarks.md or the README's
// headline figures are not what make bench-doc renders from
// test/bench/results/: a results file or the template changed without
// regenerating, or the generated text was edited by hand.
func TestGeneratedDocsUpToDate(t *testing.T) {
	const root = "../../../../"
	if err := run(root+"test/bench/results", root+"docs/benchmarks.md", root+"README.md", true); err != nil {
		t.Fatal(err)
	}
}

func TestValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{11771, "msg/s", "11 771 msg/s"},
		{0.9988, "×", "1.00×"},
		{0.863, "ms", "0.863 ms"},
		{1.73, "ms", "1.73 ms"},
		{17.9, "KiB", "17.9 KiB"},
		{32, "µs", "32 µs"},
		{-0.7, "%", "-0.7 %"},
		{0.4, "%", "+0.4 %"},
		{1200000, "", "1 200 000"},
		{0.00035, "", "0.00035"},
		{3100, "ns/op", "3 100 ns/op"},
	} {
		if got := Value(c.v, c.unit); got != c.want {
			t.Errorf("Value(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestHeadlineReplacesOnlyTheBlock(t *testing.T) {
	files := []results.File{{Transcribed: "from prose", Metrics: []results.Metric{
		{Name: "r", Value: 0.5, Unit: "×", Headline: "half as fast", Target: "≥ 0.4"},
		{Name: "not a headline", Value: 9, Unit: "s"},
	}}}
	readme := "top\n" + headlineStart + "\nold\n" + headlineEnd + "\nbottom\n"
	got, err := Headline(readme, files)
	if err != nil {
		t.Fatal(err)
	}
	want := "top\n" + headlineStart + "\n- **0.50×** half as fast (target ≥ 0.4).\n\n" +
		"Some of these figures are transcribed from earlier runs, not fresh ones: the\nbenchmarks page says which.\n" +
		headlineEnd + "\nbottom\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := Headline("no block", files); err == nil || !strings.Contains(err.Error(), headlineStart) {
		t.Errorf("Headline without a block: %v", err)
	}
}

func TestFromGoBenchTakesTheMedianPerBenchmarkAndUnit(t *testing.T) {
	out := `goos: linux
cpu: AMD EPYC 7B13
BenchmarkTelemetryPath/off-2         	30000000	        38.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkTelemetryPath/off-2         	30000000	        40.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkTelemetryPath/off-2         	30000000	        39.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkForwardPipeline/hato-mailbox-2   20000   59000 ns/op   2.12 consumer-msgs/op   195 allocs/op
PASS
`
	f, err := FromGoBench(strings.NewReader(out), "t", "c")
	if err != nil {
		t.Fatal(err)
	}
	if f.Mode != "gobench" || f.Env.CPU != "AMD EPYC 7B13" {
		t.Errorf("file %+v", f)
	}
	want := []results.Metric{
		{Name: "BenchmarkTelemetryPath", Impl: "off", Value: 39, Unit: "ns/op"},
		{Name: "BenchmarkTelemetryPath", Impl: "off", Value: 0, Unit: "B/op"},
		{Name: "BenchmarkTelemetryPath", Impl: "off", Value: 0, Unit: "allocs/op"},
		{Name: "BenchmarkForwardPipeline", Impl: "hato-mailbox", Value: 59000, Unit: "ns/op"},
		{Name: "BenchmarkForwardPipeline", Impl: "hato-mailbox", Value: 2.12, Unit: "consumer-msgs/op"},
		{Name: "BenchmarkForwardPipeline", Impl: "hato-mailbox", Value: 195, Unit: "allocs/op"},
	}
	if len(f.Metrics) != len(want) {
		t.Fatalf("metrics %+v", f.Metrics)
	}
	for i, m := range want {
		if f.Metrics[i] != m {
			t.Errorf("metric %d = %+v, want %+v", i, f.Metrics[i], m)
		}
	}
	if _, err := FromGoBench(strings.NewReader("PASS\n"), "t", "c"); err == nil {
		t.Error("no results: no error")
	}
}

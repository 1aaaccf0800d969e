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

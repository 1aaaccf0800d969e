package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hato-go/hato/test/bench/internal/results"
)

// benchLine is one result line of `go test -bench`: the name (with its
// -GOMAXPROCS suffix), the iterations, then value-unit pairs.
var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+\d+\s+(.+)$`)

// FromGoBench turns the output of `go test -bench` (every -count run) into
// a results file of mode "gobench": one metric per benchmark and unit, the
// median over the runs; a sub-benchmark's name ("TelemetryPath/off") is the
// metric's Impl. It keeps the CPU line go test prints as the machine's.
func FromGoBench(r io.Reader, title, command string) (results.File, error) {
	type key struct{ bench, sub, unit string }
	var order []key
	values := map[key][]float64{}
	cpu := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if c, ok := strings.CutPrefix(line, "cpu: "); ok {
			cpu = strings.TrimSpace(c)
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		bench, sub, _ := strings.Cut(m[1], "/")
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return results.File{}, fmt.Errorf("%q: %w", line, err)
			}
			k := key{bench, sub, f[i+1]}
			if _, seen := values[k]; !seen {
				order = append(order, k)
			}
			values[k] = append(values[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		return results.File{}, err
	}
	if len(order) == 0 {
		return results.File{}, fmt.Errorf("no benchmark results in the input")
	}
	f := results.File{Mode: "gobench", Title: title, Command: command, Env: results.CaptureEnv("", "")}
	if cpu != "" {
		f.Env.CPU = cpu
	}
	for _, k := range order {
		f.Metrics = append(f.Metrics, results.Metric{Name: "Benchmark" + k.bench, Impl: k.sub, Value: medianOf(values[k]), Unit: k.unit})
	}
	return f, nil
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

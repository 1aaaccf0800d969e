// Command benchdoc renders docs/benchmarks.md and the README's headline
// figures from the benchmark results in test/bench/results/ (make
// bench-doc). The page comes from benchmarks.md.tmpl next to this file; the
// README's figures replace whatever stands between the lines
// "<!-- bench:headline -->" and "<!-- /bench:headline -->": every metric
// with a Headline, in the order of the page.
//
//	go run ./test/bench/cmd/benchdoc              # write both
//	go run ./test/bench/cmd/benchdoc -check       # exit 1 if either is out of date
//
// With -gobench it converts the output of `go test -bench` (a file, or -
// for stdin) into a results file instead, written to -o:
//
//	go test -run '^$' -bench Telemetry -benchmem -count 3 . | tee /tmp/tel.txt
//	go run ./test/bench/cmd/benchdoc -gobench /tmp/tel.txt -title 'Tracing cost per message, no broker' \
//	    -command "go test -run '^$' -bench Telemetry -benchmem -count 3 ." -o test/bench/results/telemetry.json
//
// Paths are relative to the module root, where make runs it.
package main

import (
	"bytes"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/template"

	"github.com/hato-go/hato/test/bench/internal/results"
)

//go:embed benchmarks.md.tmpl
var pageTemplate string

const (
	headlineStart = "<!-- bench:headline -->"
	headlineEnd   = "<!-- /bench:headline -->"
)

func main() {
	dir := flag.String("results", "test/bench/results", "directory of the results files (*.json)")
	out := flag.String("out", "docs/benchmarks.md", "the page to write")
	readme := flag.String("readme", "README.md", "the README whose headline figures to update")
	check := flag.Bool("check", false, "write nothing; exit 1 if the page or the README is out of date")
	gobench := flag.String("gobench", "", "convert this `go test -bench` output (- for stdin) into a results file written to -o, instead")
	title := flag.String("title", "", "with -gobench: the results' title")
	command := flag.String("command", "", "with -gobench: the command that produced the output")
	to := flag.String("o", "", "with -gobench: the results file to write")
	flag.Parse()
	var err error
	if *gobench != "" {
		err = convert(*gobench, *title, *command, *to)
	} else {
		err = run(*dir, *out, *readme, *check)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
}

// convert writes the results of a `go test -bench` output file.
func convert(in, title, command, to string) error {
	if title == "" || command == "" || to == "" {
		return errors.New("-gobench needs -title, -command and -o")
	}
	r := os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	f, err := FromGoBench(r, title, command)
	if err != nil {
		return err
	}
	return results.Write(to, f)
}

func run(dir, out, readme string, check bool) error {
	files, err := results.Load(dir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no results in %s", dir)
	}
	order(files)
	page, err := Page(files)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	newReadme, err := Headline(string(old), files)
	if err != nil {
		return fmt.Errorf("%s: %w", readme, err)
	}
	return update(map[string]string{out: page, readme: newReadme}, check)
}

// update writes each file whose content differs; with check it writes
// nothing and fails naming the files that differ.
func update(want map[string]string, check bool) error {
	var stale []string
	for _, path := range slices.Sorted(maps.Keys(want)) {
		have, _ := os.ReadFile(path)
		if string(have) == want[path] {
			continue
		}
		if check {
			stale = append(stale, path)
			continue
		}
		if err := os.WriteFile(path, []byte(want[path]), 0o644); err != nil {
			return err
		}
	}
	if len(stale) > 0 {
		return fmt.Errorf("out of date (run make bench-doc): %s", strings.Join(stale, ", "))
	}
	return nil
}

// modeRank orders the page: forwarding first, then the pipeline, routes,
// ceiling and soak.
var modeRank = map[string]int{"process": 0, "inprocess": 1, "gobench": 2, "routes": 3, "ceiling": 4, "soak": 5}

func order(files []results.File) {
	slices.SortStableFunc(files, func(a, b results.File) int { return modeRank[a.Mode] - modeRank[b.Mode] })
}

// Page renders docs/benchmarks.md.
func Page(files []results.File) (string, error) {
	t, err := template.New("page").Funcs(template.FuncMap{"env": Env, "value": Value}).Parse(pageTemplate)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, struct{ Files []results.File }{files}); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Headline replaces the README's headline block with the headline metrics.
func Headline(readme string, files []results.File) (string, error) {
	i := strings.Index(readme, headlineStart)
	j := strings.Index(readme, headlineEnd)
	if i < 0 || j < i {
		return "", errors.New("no " + headlineStart + " … " + headlineEnd + " block")
	}
	var b strings.Builder
	b.WriteString(headlineStart + "\n")
	transcribed := false
	for _, f := range files {
		for _, m := range f.Metrics {
			if m.Headline == "" {
				continue
			}
			fmt.Fprintf(&b, "- **%s** %s", Value(m.Value, m.Unit), m.Headline)
			if m.Target != "" {
				fmt.Fprintf(&b, " (target %s)", m.Target)
			}
			b.WriteString(".\n")
			transcribed = transcribed || f.Transcribed != ""
		}
	}
	if transcribed {
		b.WriteString("\nSome of these figures are transcribed from earlier runs, not fresh ones: the\nbenchmarks page says which.\n")
	}
	return readme[:i] + b.String() + readme[j:], nil
}

// Env describes a run's machine in one line.
func Env(e results.Env) string {
	parts := []string{fmt.Sprintf("%d cores", e.Cores)}
	if e.CPU != "" {
		parts[0] += " (" + e.CPU + ")"
	}
	if e.MemoryMiB > 0 {
		parts = append(parts, fmt.Sprintf("%.1f GiB memory", float64(e.MemoryMiB)/1024))
	}
	if e.OS != "" {
		parts = append(parts, e.OS+"/"+e.Arch)
	}
	parts = append(parts, "Go "+strings.TrimPrefix(e.GoVersion, "go"))
	if e.GOMAXPROCS > 0 {
		parts = append(parts, fmt.Sprintf("GOMAXPROCS %d", e.GOMAXPROCS))
	}
	if e.RabbitMQ != "" {
		parts = append(parts, "RabbitMQ "+e.RabbitMQ)
	}
	if e.LoadStart != "" || e.LoadEnd != "" {
		parts = append(parts, fmt.Sprintf("load average %s at the start, %s at the end", or(e.LoadStart, "?"), or(e.LoadEnd, "?")))
	}
	return strings.Join(parts, ", ")
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Value formats a metric's value with its unit.
func Value(v float64, unit string) string {
	switch unit {
	case "×":
		return strconv.FormatFloat(v, 'f', 2, 64) + "×"
	case "%":
		return fmt.Sprintf("%+.1f %%", v)
	case "ms", "µs", "s", "KiB", "MiB":
		return decimals(v) + " " + unit
	case "":
		return group(v)
	}
	return group(v) + " " + unit
}

// decimals shows small values with more digits.
func decimals(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100 || a >= 1 && v == math.Trunc(v):
		return group(v)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// group writes a whole number with thin-space thousands (11 771), or a
// fraction with up to three significant decimals.
func group(v float64) string {
	if v != math.Trunc(v) && math.Abs(v) < 100 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteRune(' ')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

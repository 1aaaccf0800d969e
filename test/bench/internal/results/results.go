// Package results is the machine-readable form of hato's benchmark results:
// what `go run ./test/bench -json FILE` writes for every mode, what
// test/bench/results/ keeps, and what test/bench/cmd/benchdoc renders into
// docs/benchmarks.md and the README's headline figures.
//
// A File is one run of one mode: the command, the machine it ran on, the
// metrics (each a named value with its unit, the implementation it belongs
// to and the target it is held against) and, in Raw, the mode's own full
// report. A File whose Transcribed is set was not produced by a run: its
// figures were copied from an earlier prose report, and say from where.
package results

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Schema is the version of the File format.
const Schema = 1

// File is one benchmark run of one mode.
type File struct {
	Schema int `json:"schema"`
	// Mode is the bench mode (inprocess, process, routes, ceiling, soak),
	// or "gobench" for `go test -bench` figures.
	Mode string `json:"mode"`
	// Title names the measurement in docs/benchmarks.md.
	Title string `json:"title"`
	// Command reproduces the run.
	Command string `json:"command"`
	// Transcribed, when set, says the figures were copied from an earlier
	// report rather than written by a run, and from where.
	Transcribed string `json:"transcribed,omitempty"`
	// Notes are sentences shown under the table (what a figure means).
	Notes   []string        `json:"notes,omitempty"`
	Env     Env             `json:"env"`
	Metrics []Metric        `json:"metrics"`
	Raw     json.RawMessage `json:"raw,omitempty"`
}

// Env is the machine and software a run measured.
type Env struct {
	Cores      int    `json:"cores"`
	MemoryMiB  int    `json:"memory_mib,omitempty"`
	CPU        string `json:"cpu,omitempty"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	GoVersion  string `json:"go_version"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	RabbitMQ   string `json:"rabbitmq_version,omitempty"`
	// LoadStart and LoadEnd are the host's 1-minute load average when the
	// run began and ended.
	LoadStart string `json:"loadavg_start,omitempty"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
}

// Metric is one measured figure.
type Metric struct {
	// Name says what was measured ("throughput", "p99 latency", ...).
	Name string `json:"name"`
	// Impl is who was measured ("hato", "baseline", "hato/otel"); empty for
	// a comparison.
	Impl  string  `json:"impl,omitempty"`
	Value float64 `json:"value"`
	// Unit is the value's unit: "msg/s", "ms", "µs", "KiB", "MiB", "s",
	// "allocs/op", "ns/op", "%", "×" (a ratio), or "" for a count.
	Unit string `json:"unit"`
	// Target is the goal the figure is held against, as text ("≥ 0.95").
	Target string `json:"target,omitempty"`
	// Headline, when set, is the figure's label among the README's
	// headline figures.
	Headline string `json:"headline,omitempty"`
}

// CaptureEnv describes this machine and process; rabbitmq is the broker's
// version as the bench read it (empty if unknown), load the load average
// when the run began.
func CaptureEnv(rabbitmq, load string) Env {
	return Env{
		Cores:      runtime.NumCPU(),
		MemoryMiB:  memTotalMiB(),
		CPU:        cpuModel(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		GoVersion:  runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		RabbitMQ:   rabbitmq,
		LoadStart:  load,
	}
}

// memTotalMiB reads MemTotal from /proc/meminfo; 0 when unavailable.
func memTotalMiB() int {
	v := procField("/proc/meminfo", "MemTotal")
	kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
	if err != nil {
		return 0
	}
	return kb / 1024
}

// cpuModel reads the first "model name" of /proc/cpuinfo; "" when
// unavailable.
func cpuModel() string { return strings.TrimSpace(procField("/proc/cpuinfo", "model name")) }

// procField returns the value after "key:" on the first line of a /proc
// file that starts with key.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return v
		}
	}
	return ""
}

// Write writes f as indented JSON to path.
func Write(path string, f File) error {
	f.Schema = Schema
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Load reads every *.json File in dir, sorted by file name.
func Load(dir string) ([]File, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []File
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var f File
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if f.Schema != Schema {
			return nil, fmt.Errorf("%s: schema %d, want %d", name, f.Schema, Schema)
		}
		if f.Mode == "" || len(f.Metrics) == 0 {
			return nil, fmt.Errorf("%s: %w", name, errors.New("no mode or no metrics"))
		}
		out = append(out, f)
	}
	return out, nil
}

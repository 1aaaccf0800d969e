// Package prof starts the profiles the benchmark's node binaries write when
// asked by environment: HATO_CPUPROFILE, HATO_BLOCKPROFILE,
// HATO_MUTEXPROFILE (file paths), and HATO_TRACE: an execution trace of
// the first HATO_TRACE_SECONDS (default 8) seconds of the process. Start returns the function that writes
// them; call it before the process exits.
package prof

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"sync"
	"time"
)

// Start starts what the environment asks for.
func Start() (stop func()) {
	var stops []func()
	if path := os.Getenv("HATO_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			stops = append(stops, func() { pprof.StopCPUProfile(); _ = f.Close() })
		} else {
			fmt.Fprintln(os.Stderr, "prof: cpu profile:", err)
		}
	}
	if path := os.Getenv("HATO_BLOCKPROFILE"); path != "" {
		// Every blocking event of 10µs or more is sampled.
		runtime.SetBlockProfileRate(10000)
		stops = append(stops, func() { write("block", path) })
	}
	if path := os.Getenv("HATO_MUTEXPROFILE"); path != "" {
		runtime.SetMutexProfileFraction(1)
		stops = append(stops, func() { write("mutex", path) })
	}
	if path := os.Getenv("HATO_TRACE"); path != "" {
		stops = append(stops, startTrace(path))
	}
	return func() {
		for _, s := range stops {
			s()
		}
	}
}

func write(name, path string) { writeProfile(name, path, 0) }

// startTrace traces the process until HATO_TRACE_SECONDS pass or stop is
// called, whichever comes first.
func startTrace(path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil || trace.Start(f) != nil {
		fmt.Fprintln(os.Stderr, "prof: trace:", err)
		return func() {}
	}
	secs, err := strconv.Atoi(os.Getenv("HATO_TRACE_SECONDS"))
	if err != nil || secs <= 0 {
		secs = 8
	}
	var once sync.Once
	stop = func() { once.Do(func() { trace.Stop(); _ = f.Close() }) }
	time.AfterFunc(time.Duration(secs)*time.Second, stop)
	return stop
}

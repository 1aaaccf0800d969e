package prof

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// IdleRate makes the heap profile of Idle exact enough to divide by
// routes (a sample every 512 bytes allocated, not every 512 KiB): call it
// first thing in main. It does nothing unless HATO_IDLEPROFILE is set.
//
// It also logs, for a minute, every change of the runtime's starting stack
// size (/gc/stack/starting-size:bytes, set at each GC from the average stack
// in use): goroutines started while it is 4 KiB keep 4 KiB stacks.
func IdleRate() {
	if os.Getenv("HATO_IDLEPROFILE") != "" {
		runtime.MemProfileRate = 512
		go watchStartingStack()
	}
}

func watchStartingStack() {
	sample := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	var last uint64
	t0 := time.Now()
	for time.Since(t0) < time.Minute {
		metrics.Read(sample)
		if v := sample[0].Value.Uint64(); v != last {
			fmt.Fprintf(os.Stderr, "idle profile: %s starting stack %d B (gc %d, goroutines %d)\n",
				time.Since(t0).Round(time.Millisecond), v, sample[1].Value.Uint64(), runtime.NumGoroutine())
			last = v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Idle writes, when HATO_IDLEPROFILE=prefix is set, a snapshot of an idle
// node after wait: its stack in use before and after each of 3 GCs, prefix-N.goroutine (aggregated stacks), prefix-N.heap (the
// in-use heap after a GC), and a summary of the runtime's memory to stderr
// (goroutines, stacks, heap) divided by perUnit (routes). Call it on its
// own goroutine once the node is ready.
func Idle(wait time.Duration, perUnit int) {
	if os.Getenv("HATO_IDLEPROFILE") == "" {
		return
	}
	time.Sleep(wait)
	Snapshot("", perUnit)
}

// Snapshot is Idle's snapshot, now; its files' names add tag after the
// prefix. It does nothing unless HATO_IDLEPROFILE is set.
func Snapshot(tag string, perUnit int) {
	prefix := os.Getenv("HATO_IDLEPROFILE")
	if prefix == "" {
		return
	}
	prefix += tag
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	stacks := []string{fmt.Sprintf("%.2f", float64(m.StackInuse)/1024/float64(max(perUnit, 1)))}
	for range 3 {
		runtime.GC()
		runtime.ReadMemStats(&m)
		stacks = append(stacks, fmt.Sprintf("%.2f", float64(m.StackInuse)/1024/float64(max(perUnit, 1))))
	}
	fmt.Fprintf(os.Stderr, "idle profile: stack KiB/unit before and after each of 3 GCs: %v\n", stacks)
	writeProfile("goroutine", fmt.Sprintf("%s-%d.goroutine", prefix, perUnit), 1)
	writeProfile("heap", fmt.Sprintf("%s-%d.heap", prefix, perUnit), 0)
	runtime.ReadMemStats(&m)
	n := float64(max(perUnit, 1))
	kib := func(b uint64) string {
		return fmt.Sprintf("%.1f MiB (%.2f KiB/unit)", float64(b)/(1<<20), float64(b)/1024/n)
	}
	fmt.Fprintf(os.Stderr, "idle profile: units %d goroutines %d (%.2f/unit)\n  stack in use %s\n  heap in use %s, heap alloc %s, heap idle %s released %s\n  sys %s, other sys %s, gc sys %s, mspan %s\n",
		perUnit, runtime.NumGoroutine(), float64(runtime.NumGoroutine())/n,
		kib(m.StackInuse), kib(m.HeapInuse), kib(m.HeapAlloc), kib(m.HeapIdle), kib(m.HeapReleased),
		kib(m.Sys), kib(m.OtherSys), kib(m.GCSys), kib(m.MSpanInuse))
}

func writeProfile(name, path string, debug int) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "prof:", err)
		return
	}
	defer func() { _ = f.Close() }()
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		fmt.Fprintln(os.Stderr, "prof:", err)
	}
}

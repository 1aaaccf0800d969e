package prof

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Gaps records when a concurrency-1 handler starts and returns, to show how
// long the handler goroutine waits between two messages while a backlog
// waits (the per-message overhead on the serial path outside the handler).
// NewGaps returns nil unless HATO_GAPS is set; a nil *Gaps records nothing.
// HATO_GAPS=N (a number) reports the first N runs only (the bench's
// warm-up and throughput phases: 21000 by default).
type Gaps struct {
	mu        sync.Mutex
	t0        time.Time
	in, out   []time.Duration
	lastOut   time.Duration
	inHandler bool
}

// NewGaps returns a recorder when HATO_GAPS is set.
func NewGaps() *Gaps {
	if os.Getenv("HATO_GAPS") == "" {
		return nil
	}
	return &Gaps{t0: time.Now()}
}

// Enter marks a handler start.
func (g *Gaps) Enter() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.in = append(g.in, time.Since(g.t0))
	g.mu.Unlock()
}

// Exit marks a handler return.
func (g *Gaps) Exit() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.out = append(g.out, time.Since(g.t0))
	g.mu.Unlock()
}

// Report writes the distribution of handler times and of gaps (return to
// next start) shorter than 5 ms: longer ones are idle time, not overhead.
func (g *Gaps) Report(w io.Writer) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n := min(len(g.in), len(g.out))
	if limit, err := strconv.Atoi(os.Getenv("HATO_GAPS")); err == nil && limit > 0 {
		n = min(n, limit)
	}
	var busy, gaps []time.Duration
	for i := range n {
		busy = append(busy, g.out[i]-g.in[i])
		if i+1 < len(g.in) {
			if gap := g.in[i+1] - g.out[i]; gap < 5*time.Millisecond {
				gaps = append(gaps, gap)
			}
		}
	}
	span := time.Duration(0)
	if n > 0 {
		span = g.out[n-1] - g.in[0]
	}
	fmt.Fprintf(w, "gaps: %d handler runs in %s; handler %s; gap to the next run (<5ms, %d of them) %s\n",
		n, span, dist(busy), len(gaps), dist(gaps))
}

func dist(v []time.Duration) string {
	if len(v) == 0 {
		return "-"
	}
	slices.Sort(v)
	var sum time.Duration
	for _, d := range v {
		sum += d
	}
	q := func(p float64) time.Duration { return v[min(len(v)-1, int(p*float64(len(v))))] }
	return fmt.Sprintf("mean %s p50 %s p90 %s p99 %s", sum/time.Duration(len(v)), q(0.5), q(0.9), q(0.99))
}

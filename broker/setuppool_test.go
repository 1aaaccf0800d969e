package broker

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato/test/brokertest"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	brokertest.WaitFor(t, 10*time.Second, cond, "%s", what)
}

// goroutines is how many goroutines p has.
func (p *SetupPool) goroutines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

func TestSetupPoolRunsEveryJobAtMostLimitAtOnceAndThenKeepsNoGoroutine(t *testing.T) {
	const jobs, limit = 40, 3
	p := NewSetupPool(limit)
	p.extra = func() int { return 0 }
	release := make(chan struct{})
	var now, most, done atomic.Int32
	for range jobs {
		p.Go(func() {
			n := now.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			now.Add(-1)
			done.Add(1)
		})
	}
	waitFor(t, "the pool to fill", func() bool { return now.Load() == limit })
	if g := p.goroutines(); g != limit {
		t.Fatalf("%d goroutines with %d jobs queued, want the limit %d", g, jobs, limit)
	}
	close(release)
	waitFor(t, "every job to run", func() bool { return done.Load() == jobs })
	if m := most.Load(); m != limit {
		t.Fatalf("%d jobs ran at once, want at most (and, with a backlog, exactly) %d", m, limit)
	}
	waitFor(t, "the pool's goroutines to retire", func() bool { return p.goroutines() == 0 })
	// Idle, it starts again on the next job.
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
}

func TestSetupPoolGrowsWithTheConsumersRunning(t *testing.T) {
	p := NewSetupPool(1)
	var consumers atomic.Int64
	p.extra = func() int { return int(consumers.Load() / 2) }
	base := 1
	release := make(chan struct{})
	var now atomic.Int32
	for range base + 6 {
		p.Go(func() { now.Add(1); <-release; now.Add(-1) })
	}
	waitFor(t, "the pool to fill", func() bool { return now.Load() == int32(base) })
	// Four more consumers running: two more set-ups at once, started as
	// soon as a running one finishes.
	consumers.Add(4)
	release <- struct{}{}
	waitFor(t, "two more set-ups at once", func() bool { return now.Load() == int32(base+2) })
	if g := p.goroutines(); g != base+2 {
		t.Fatalf("%d goroutines, want %d", g, base+2)
	}
	close(release)
	waitFor(t, "the pool's goroutines to retire", func() bool { return p.goroutines() == 0 })
}

func TestSetupPoolRunsQueuedJobsInOrder(t *testing.T) {
	p := NewSetupPool(1)
	p.extra = func() int { return 0 }
	hold := make(chan struct{})
	p.Go(func() { <-hold }) // occupies the only goroutine while the rest queue
	var mu sync.Mutex
	var order []int
	for i := range 5 {
		p.Go(func() { mu.Lock(); order = append(order, i); mu.Unlock() })
	}
	close(hold)
	waitFor(t, "all five jobs", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 5 })
	if want := []int{0, 1, 2, 3, 4}; !slices.Equal(order, want) {
		t.Fatalf("ran %v, want %v", order, want)
	}
}

func TestNilSetupPoolRunsEachJobOnItsOwnGoroutine(t *testing.T) {
	var p *SetupPool
	a, b := make(chan struct{}), make(chan struct{})
	done := make(chan struct{}, 2)
	// Each waits for the other: both finish only if they run at once.
	p.Go(func() { close(a); <-b; done <- struct{}{} })
	p.Go(func() { close(b); <-a; done <- struct{}{} })
	<-done
	<-done
}

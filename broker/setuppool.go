package broker

import (
	"sync"
	"sync/atomic"
)

// SetupBase is how many consumer channel opens and route set-ups (QoS,
// declarations, basic.consume) a SetupPool runs at once when no consumer
// runs yet; every two consumers running in the process add one. RabbitMQ sets up many routes faster with
// many set-ups in flight (more frames per socket read on both sides), and
// the bound keeps the goroutines blocked in set-up round trips (about 2 KiB
// of stack each) from outweighing the parked consumers (about 0.7 KiB):
// the Go runtime starts each new goroutine with the average stack in use
// at the last GC plus a guard, rounded up to a power of two, and with
// thousands of set-ups waiting at once every consumer started meanwhile
// got two 4 KiB stacks instead of 2 KiB ones, for good (a parked stack is
// not shrunk): 7 KiB of stack per idle route instead of 4.
const SetupBase = 128

// liveConsumers counts the consumers whose session goroutine runs,
// process-wide.
var liveConsumers atomic.Int64

// SetupPool runs blocking set-up work on at most SetupBase + (consumers
// running)/2 goroutines, first come first served, and keeps no goroutine
// while it has nothing to run. The zero value is not usable: see
// NewSetupPool. A nil *SetupPool runs each job on a goroutine of its own.
type SetupPool struct {
	mu      sync.Mutex
	queue   []func()
	running int
	base    int
	extra   func() int // how many more than base may run now
}

// NewSetupPool returns a pool running at most base jobs at once, plus one
// for every two consumers running.
func NewSetupPool(base int) *SetupPool {
	return &SetupPool{base: max(base, 1), extra: halfTheConsumers}
}

func halfTheConsumers() int { return int(liveConsumers.Load() / 2) }

// limit is how many jobs may run now.
func (p *SetupPool) limit() int { return p.base + p.extra() }

// Go runs job on one of the pool's goroutines, now or once one is free. It
// never blocks.
func (p *SetupPool) Go(job func()) {
	if p == nil {
		go job()
		return
	}
	p.mu.Lock()
	if p.running >= p.limit() {
		p.queue = append(p.queue, job)
		p.mu.Unlock()
		return
	}
	p.running++
	p.mu.Unlock()
	go p.work(job)
}

// work runs job, then queued jobs until none is left, starting more
// goroutines when the limit rose meanwhile.
func (p *SetupPool) work(job func()) {
	for job != nil {
		job()
		var more []func()
		job, more = p.take()
		for _, j := range more {
			go p.work(j)
		}
	}
}

// take takes the job to run next, or retires the calling goroutine, and
// the jobs to start on new goroutines since the limit rose.
func (p *SetupPool) take() (job func(), more []func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	job = p.pop()
	if job == nil {
		p.running--
		p.queue = nil // a backlog's array goes with it
		return nil, nil
	}
	for limit := p.limit(); p.running < limit; p.running++ {
		j := p.pop()
		if j == nil {
			break
		}
		more = append(more, j)
	}
	return job, more
}

// pop removes and returns the first queued job; nil if none.
func (p *SetupPool) pop() func() {
	if len(p.queue) == 0 {
		return nil
	}
	job := p.queue[0]
	p.queue[0] = nil
	p.queue = p.queue[1:]
	return job
}

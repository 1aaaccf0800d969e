package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// warmDispatcher runs a mailbox on one goroutine that it keeps while
// messages keep coming and lets go after an idle period. Proto.Actor's
// default dispatcher starts a new goroutine each time a mailbox goes from
// idle to busy; on a hot route that is several times per message, and each
// new goroutine grows its stack again (measured: about 15 % of the route's
// CPU in the forwarding benchmark).
//
// A mailbox schedules at most one run at a time (it flips idle→running with
// a CAS), so at most one function waits while another runs.
type warmDispatcher struct {
	mu         sync.Mutex
	work       chan func()
	running    bool
	idle       time.Duration
	throughput int
}

var _ actor.Dispatcher = (*warmDispatcher)(nil)

// dispatcherIdle is how long the goroutine waits for more work.
const dispatcherIdle = 100 * time.Millisecond

func newWarmDispatcher() *warmDispatcher {
	return &warmDispatcher{work: make(chan func(), 8), idle: dispatcherIdle, throughput: 300}
}

// Throughput implements actor.Dispatcher: messages per run before yielding.
func (d *warmDispatcher) Throughput() int { return d.throughput }

// Schedule implements actor.Dispatcher. The send happens under the lock so
// the goroutine cannot decide to exit between our check and the send; it
// never blocks (see the type's comment).
func (d *warmDispatcher) Schedule(fn func()) {
	d.mu.Lock()
	d.work <- fn
	if !d.running {
		d.running = true
		go d.loop()
	}
	d.mu.Unlock()
}

func (d *warmDispatcher) loop() {
	idle := time.NewTimer(d.idle)
	defer idle.Stop()
	for {
		select {
		case fn := <-d.work:
			fn()
			idle.Reset(d.idle)
		case <-idle.C:
			d.mu.Lock()
			if len(d.work) == 0 {
				d.running = false
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			idle.Reset(d.idle)
		}
	}
}

package actors

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

func (c *consumer) arrived(ctx actor.Context, j *job) {
	d := j.d
	restoreRetried(d)                                      // outage hook: back from a delay queue
	if c.drain != nil || c.drained || c.breakerRefuses() { // outage hook: paused
		d.Nack(true)
		return
	}
	c.nextID++
	j.id, j.gate = c.nextID, c.gate
	c.jobs[j.id] = j
	if c.dead(j) {
		return
	}
	if reason := unparseable(j.d); reason != nil {
		c.deadLetter(ctx, j, reason)
		return
	}
	if reason := c.poisoned(j); reason != nil {
		c.deadLetter(ctx, j, reason)
		return
	}
	if d.Redelivered {
		// Continue the attempt budget where the previous delivery left it.
		j.attempts = c.state.failures(j.keyOf())
		if j.attempts >= c.policy.MaxAttempts {
			err := fmt.Errorf("failed %d attempts before this redelivery", j.attempts)
			if c.delayRetry(ctx, j, err) { // outage hook: a delayed retry is left
				return
			}
			c.deadLetter(ctx, j, err)
			return
		}
	}
	c.queue = append(c.queue, j)
	c.pump()
}

// poisoned reports why a redelivered message must not run again: it crashed
// its handler or was requeued more than MaxRedeliveries times, as the
// route's memory counted it. A quorum queue's x-delivery-count is only a
// backstop (see FailurePolicy.DeliveryCountLimit): before RabbitMQ 4.3 it
// rises on every return, so it also counts what other messages and
// restarts did to this one.
func (c *consumer) poisoned(j *job) error {
	if !j.d.Redelivered {
		return nil
	}
	if n := c.state.count(j.keyOf()); n > c.policy.MaxRedeliveries {
		return fmt.Errorf("poison message: crashed or requeued %d times (limit %d)", n, c.policy.MaxRedeliveries)
	}
	// The backstop deducts the channels the route lost with a connection or
	// a node: the broker counted those returns too.
	if n, ok := deliveryCount(j.d.Headers); ok && n-int64(c.state.lostChannels()) > int64(c.policy.DeliveryCountLimit()) {
		return fmt.Errorf("poison message: delivered %d times (backstop %d, %d channels lost)",
			n, c.policy.DeliveryCountLimit(), c.state.lostChannels())
	}
	return nil
}

// pump starts queued jobs while a slot is free. A job keeps its slot while
// its handler runs and while it waits for its retry, so Concurrency 1 keeps
// order across retries. With Route.StrictOrder it also keeps it while its
// handler's publishes wait for their confirms (a publish that fails makes
// it run again), so the order holds across a failed publish too; without,
// the next job runs meanwhile (pipelined, as a hand-written forwarder does).
func (c *consumer) pump() {
	for c.running+c.waiting < c.route.Concurrency && len(c.queue) > 0 && c.drain == nil {
		j := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.start(j)
	}
}

// run is one handler run for a worker, in one allocation: the handler's
// context (the incarnation's, carrying the tracker), the tracker, and the
// messages that report the run.
type run struct {
	context.Context
	tr     Tracker
	done   handlerDone
	settle publishesSettled
	d      *broker.Delivery
	gate   *ackGate
	box    *settledBox
	self   *actor.PID
	sys    *actor.ActorSystem
}

// Value implements context.Context: the run carries its tracker.
func (r *run) Value(key any) any {
	if _, ok := key.(trackerKey); ok {
		return &r.tr
	}
	return r.Context.Value(key)
}

// settled is the tracker's settle callback, called only after a handler
// that succeeded, once its last pending publish settled: all confirmed
// means the delivery is acked here, on the publisher's goroutine, without
// waiting for the actor's mailbox.
func (r *run) settled(err error) {
	if err == nil {
		r.gate.ack(r.d)
	}
	r.settle.err = err
	r.box.push(r)
}

// settledBox collects the runs whose publishes settled, for the actor: one
// wake-up message for however many settle before it takes them (a burst of
// confirms), instead of one message each. A run's handlerDone was sent
// before the run is pushed, but a wake-up sent earlier may bring the run to
// the actor before it: see publishesSettled.
type settledBox struct {
	mu   sync.Mutex
	runs []*run
	wake *settledWake
	self *actor.PID
	sys  *actor.ActorSystem
}

func (b *settledBox) push(r *run) {
	b.mu.Lock()
	b.runs = append(b.runs, r)
	first := len(b.runs) == 1
	b.mu.Unlock()
	if first {
		b.sys.Root.Send(b.self, b.wake)
	}
}

// take moves the runs to buf.
func (b *settledBox) take(buf []*run) []*run {
	b.mu.Lock()
	buf = append(buf[:0], b.runs...)
	clear(b.runs)
	b.runs = b.runs[:0]
	b.mu.Unlock()
	return buf
}

// DefaultWorkerIdle is Route.WorkerIdle's default.
const DefaultWorkerIdle = 5 * time.Second

// runWorkers starts Route.Concurrency handler goroutines for this
// incarnation unless they run: with the route's first handler run, so an
// idle route holds no goroutine (nor channel) for them. They stay while the
// route works, so a handler's stack is grown once rather than for every
// delivery, and go once it idles (see workersIdle), so a route that has
// worked holds no more than one that never did: a handler's grown stack is
// 8 KiB or more. They exit when their channel is closed, after the handler
// in hand returns.
func (c *consumer) runWorkers() {
	if c.work != nil {
		return
	}
	c.work = make(chan *run, c.route.Concurrency)
	w := &workers{work: c.work, ctx: c.ctx, inc: c.inc, handle: c.route.Handle,
		timeout: c.route.HandlerTimeout, slots: c.slots, log: c.log, self: c.self, sys: c.sys}
	for range c.route.Concurrency {
		go w.run()
	}
	c.after(c.route.WorkerIdle, &workersIdle{inc: c.inc, starts: c.starts})
}

// workersIdle lets the workers go if the route started no handler since
// msg was sent and none runs; else it checks again after Route.WorkerIdle.
func (c *consumer) workersIdle(msg *workersIdle) {
	if c.work == nil {
		return // abandoned, or the workers already went
	}
	if c.starts != msg.starts || c.running > 0 {
		c.after(c.route.WorkerIdle, &workersIdle{inc: c.inc, starts: c.starts})
		return
	}
	// Nothing runs, so nothing is in the channel: the workers exit now.
	close(c.work)
	c.work = nil
}

// workers is what an incarnation's handler goroutines share.
type workers struct {
	work    <-chan *run
	ctx     context.Context
	inc     uint64
	handle  func(context.Context, *broker.Delivery) error
	timeout time.Duration // Route.HandlerTimeout
	slots   *handlerSlots
	log     *zap.Logger
	self    *actor.PID
	sys     *actor.ActorSystem
}

// run takes a route-wide slot for each item (waiting for handlers of an
// earlier incarnation to return), runs the handler and reports (see
// report). An item whose incarnation ended before it got a slot is reported
// skipped, its handler never run.
func (w *workers) run() {
	for r := range w.work {
		if !w.slots.acquire(w.ctx, w.inc, w.waiting) {
			r.done.skipped = true
			w.report(r)
			continue
		}
		runHandler(r, w.handle, w.timeout)
		w.slots.release(w.inc)
		w.report(r)
	}
}

// report seals the item's tracker and tells the actor. A handler that
// succeeded with no publish pending gets one message, settled: the worker
// acks the delivery first if its publishes were all confirmed. Otherwise
// handlerDone is sent under the tracker's lock, so it always comes before
// the publishesSettled of the tracker's settle callback (which acks the
// delivery in turn; see consumer.start); after a failed handler that
// callback sends nothing.
func (w *workers) report(r *run) {
	done := &r.done
	ok := !done.skipped && !done.panicked && actionOf(done.err) == Ack
	settled, err := r.tr.finish(ok, func() { w.sys.Root.Send(w.self, done) })
	if !settled {
		return
	}
	if ok {
		done.settled, done.pubErr = true, err
		if err == nil {
			r.gate.ack(r.d)
		}
	}
	w.sys.Root.Send(w.self, done)
	r.tr.runAfter(err)
}

func (w *workers) waiting(others int, waited time.Duration) {
	w.log.Warn("handlers of the route's previous actor incarnation still run after their context was cancelled; "+
		"waiting for them to return before running more (a handler ignores its context)",
		zap.Int("still_running", others), zap.Duration("waited", waited))
}

// runHandler runs one handler within timeout (see handleWithin); a panic
// is recovered and reported in the result (the actor crashes on it).
func runHandler(r *run, handle func(context.Context, *broker.Delivery) error, timeout time.Duration) {
	done := &r.done
	defer func() {
		if v := recover(); v != nil {
			done.panicked, done.value, done.stack = true, v, debug.Stack()
		}
	}()
	done.err = handleWithin(r, handle, timeout)
}

// start hands j to a worker. pump calls it only while running <
// Concurrency, and the channel holds Concurrency items, so it never blocks.
func (c *consumer) start(j *job) {
	j.stage = running
	j.attempts++
	c.running++
	j.runs++
	r := &j.first
	if j.firstUsed {
		r = &run{}
	}
	j.firstUsed = true
	r.Context, r.d, r.gate, r.box, r.self, r.sys = c.ctx, j.d, j.gate, c.box, c.self, c.sys
	r.done = handlerDone{inc: c.inc, id: j.id, attempt: j.attempts}
	r.settle = publishesSettled{inc: c.inc, id: j.id, attempt: j.attempts}
	r.tr.to, r.tr.attempt, r.tr.first = r, j.attempts, j.runs == 1
	c.starts++
	c.runWorkers()
	c.work <- r
}

package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/hato-go/hato/supervisor"
)

// BreakerPolicy says when a route's circuit breaker pauses the route (see
// Route.Breaker). Zero fields take the defaults of WithDefaults. Package
// hato exports it as hato.BreakerPolicy (see hato.Breaker).
type BreakerPolicy struct {
	// FailureRatio is the share of failed handler runs within Window that
	// trips the breaker, in (0, 1]. Zero means 0.5.
	FailureRatio float64
	// MinRuns is how many handler runs Window must hold before the ratio is
	// judged. Zero means 10.
	MinRuns int
	// Window is the sliding period the runs are counted over. Zero means
	// 10 s.
	Window time.Duration
	// Cooldown is how long the route stays paused before a trial. Zero
	// means 5 s. It doubles each time a trial fails, up to MaxCooldown.
	Cooldown time.Duration
	// MaxCooldown caps the cooldown. Zero means 1 min.
	MaxCooldown time.Duration
	// Trials is how many messages the half-open route lets through (its
	// prefetch) and how many must succeed in a row to close it. Zero means 3.
	Trials int
	// Counts says whether a handler error counts as a failure. Nil means
	// the default: errors whose action is Retry (plain errors, timeouts,
	// failed publishes) count; DeadLetter, Drop and Requeue directives and
	// undecodable messages do not (they say nothing about the dependency).
	Counts func(error) bool
}

// WithDefaults fills zero fields.
func (p BreakerPolicy) WithDefaults() BreakerPolicy {
	if p.FailureRatio <= 0 || p.FailureRatio > 1 {
		p.FailureRatio = 0.5
	}
	if p.MinRuns <= 0 {
		p.MinRuns = 10
	}
	if p.Window <= 0 {
		p.Window = 10 * time.Second
	}
	if p.Cooldown <= 0 {
		p.Cooldown = 5 * time.Second
	}
	if p.MaxCooldown < p.Cooldown {
		p.MaxCooldown = max(time.Minute, p.Cooldown)
	}
	if p.Trials <= 0 {
		p.Trials = 3
	}
	if p.Counts == nil {
		p.Counts = func(err error) bool { return actionOf(err) == Retry }
	}
	return p
}

// PausedRoute is a route whose circuit breaker is open or half-open, as
// package hato reports it (hato.PausedRoute, Service.PausedRoutes,
// ConnectionStatus.Paused).
type PausedRoute struct {
	// Route is the route's name (hato.RouteInfo.Name).
	Route string
	// State is "open" (consuming nothing) or "half-open" (trying a few
	// messages).
	State string
	// Since is when the route paused.
	Since time.Time
	// Cause is what paused it: the handler error that tripped the breaker.
	Cause string
	// Cooldown is the current pause before the next trial.
	Cooldown time.Duration
}

// BreakerState is the state of a route's circuit breaker.
type BreakerState int

const (
	// BreakerClosed: the route consumes normally.
	BreakerClosed BreakerState = iota
	// BreakerOpen: the route is paused: it consumes nothing.
	BreakerOpen
	// BreakerHalfOpen: the route consumes a few trial messages.
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerEvent reports a change of a route's breaker state.
type BreakerEvent struct {
	Route string
	State BreakerState
	// Cause is what tripped it (open), or nil.
	Cause error
	// Cooldown is the pause before the next trial (open).
	Cooldown time.Duration
	// Paused is how long the route was paused, on the way back to closed.
	Paused time.Duration
}

// PauseDirective is a handler error that pauses the route at once (see
// the hato package's Pause): the breaker opens for For (the policy's
// cooldown when zero) and the message goes back to its queue, not counted
// as a failed attempt.
type PauseDirective struct {
	Err error
	For time.Duration
}

func (p *PauseDirective) Error() string {
	if p.Err == nil {
		return "pause route"
	}
	return "pause route: " + p.Err.Error()
}

// Unwrap returns the cause.
func (p *PauseDirective) Unwrap() error { return p.Err }

// breakerBuckets is how many buckets the window is counted in.
const breakerBuckets = 10

type bucket struct {
	slot       int64 // which Window/breakerBuckets period it counts
	runs, fail int
}

// breaker is a route's circuit breaker. It belongs to the consumer actor
// (no lock: only its Receive touches it).
type breaker struct {
	p     BreakerPolicy
	auto  bool // the route has a BreakerPolicy: failures trip it, not only Pause
	state BreakerState
	win   [breakerBuckets]bucket

	cooldown time.Duration // of the current or last opening
	okTrials int
	since    time.Time // opened at
	seq      uint64    // of the pending trial timer

	// limited: the session was opened with the trial prefetch.
	limited bool
	// The session is being cancelled (basic.cancel sent) and will be
	// closed once the route holds nothing; closing: Close was called.
	cancelled, closing bool
}

func newBreaker(p *BreakerPolicy) *breaker {
	b := &breaker{}
	if p != nil {
		b.p, b.auto = p.WithDefaults(), true
	} else {
		b.p = BreakerPolicy{}.WithDefaults()
	}
	b.cooldown = b.p.Cooldown
	return b
}

// record counts one handler run; it reports whether the run trips the
// breaker (closed: the ratio was reached; half-open: a trial failed) and,
// in half-open, whether the trials all succeeded (resume).
func (b *breaker) record(now time.Time, failed bool) (trip, resume bool) {
	switch b.state {
	case BreakerHalfOpen:
		if failed {
			return true, false
		}
		b.okTrials++
		return false, b.okTrials >= b.p.Trials
	case BreakerClosed:
		if !b.auto {
			return false, false
		}
		runs, fails := b.add(now, failed)
		return runs >= b.p.MinRuns && float64(fails) >= b.p.FailureRatio*float64(runs), false
	}
	return false, false
}

// add counts a run in the window and returns the window's totals.
func (b *breaker) add(now time.Time, failed bool) (runs, fails int) {
	width := b.p.Window / breakerBuckets
	if width <= 0 {
		width = 1
	}
	slot := now.UnixNano() / int64(width)
	cur := &b.win[slot%breakerBuckets]
	if cur.slot != slot {
		*cur = bucket{slot: slot}
	}
	cur.runs++
	if failed {
		cur.fail++
	}
	for _, w := range b.win {
		if w.slot > slot-breakerBuckets {
			runs += w.runs
			fails += w.fail
		}
	}
	return runs, fails
}

// open moves to open for d (zero: the grown cooldown) and returns the
// cooldown.
func (b *breaker) open(now time.Time, d time.Duration) time.Duration {
	switch {
	case d > 0:
	case b.state == BreakerHalfOpen:
		d = min(2*b.cooldown, b.p.MaxCooldown)
	default:
		d = b.p.Cooldown
	}
	if b.state == BreakerClosed {
		b.since = now
	}
	b.state, b.cooldown, b.okTrials = BreakerOpen, d, 0
	b.seq++
	return d
}

// close moves to closed and returns how long the route was paused.
func (b *breaker) close(now time.Time) time.Duration {
	b.state, b.cooldown, b.win = BreakerClosed, b.p.Cooldown, [breakerBuckets]bucket{}
	return now.Sub(b.since)
}

// breakerTrial ends a cooldown: the route goes half-open.
type breakerTrial struct{ inc, seq uint64 }

func (m *breakerTrial) incarnation() uint64 { return m.inc }

// ---- hooks called from consumer.go ----

// sessionPrefetch is the prefetch of the next session: the trial count
// while half-open.
func (c *consumer) sessionPrefetch() int {
	c.brk.limited = c.brk.state == BreakerHalfOpen && (c.route.Prefetch == 0 || c.route.Prefetch > c.brk.p.Trials)
	if c.brk.limited {
		return c.brk.p.Trials
	}
	return c.route.Prefetch
}

// breakerOutcome counts a finished handler run of a current job and trips
// or closes the breaker accordingly. Runs while open (in flight when it
// tripped) do not count.
func (c *consumer) breakerOutcome(ctx actor.Context, err error) {
	var pause *PauseDirective
	if errors.As(err, &pause) {
		if c.brk.state != BreakerOpen {
			c.trip(ctx, err, pause.For)
		}
		return
	}
	if c.brk.state == BreakerOpen {
		return
	}
	failed := err != nil && c.brk.p.Counts(err)
	if err != nil && !failed {
		return // neither a success nor a failure of the dependency
	}
	trip, resume := c.brk.record(time.Now(), failed)
	switch {
	case trip:
		c.trip(ctx, err, 0)
	case resume:
		c.resume(ctx)
	}
}

// trip pauses the route: basic.cancel on the session (handlers in flight
// finish and settle on it), the deliveries waiting for a handler slot or
// for an in-process retry go back to the queue with their failed attempts
// forgotten (see clearFailures), and a trial is
// scheduled after the cooldown. The session is closed once the route holds
// nothing (see breakerIdle).
func (c *consumer) trip(ctx actor.Context, cause error, d time.Duration) {
	from := c.brk.state
	d = c.brk.open(time.Now(), d)
	c.log.Warn("circuit breaker open: route paused",
		zap.Stringer("from", from), zap.Duration("cooldown", d), zap.Error(cause))
	c.cancelSession()
	for _, j := range c.queue {
		j.d.Nack(true)
		delete(c.jobs, j.id)
	}
	c.queue = nil
	for _, j := range c.jobs {
		if j.stage == retryWait {
			c.waiting--
			c.state.clearFailures(j.keyOf())
			c.release(j)
		}
	}
	c.after(d, &breakerTrial{inc: c.inc, seq: c.brk.seq})
	c.breakerEvent(ctx, BreakerEvent{Route: c.route.Name, State: BreakerOpen, Cause: cause, Cooldown: d})
	c.breakerIdle()
}

// resume closes the breaker after successful trials. The trial session
// (small prefetch) is cancelled and, once idle, replaced by a full one.
func (c *consumer) resume(ctx actor.Context) {
	paused := c.brk.close(time.Now())
	c.log.Info("circuit breaker closed: route resumed", zap.Duration("paused", paused))
	if c.brk.limited {
		// The trial session's prefetch is smaller than the route's.
		c.cancelSession()
	}
	c.breakerEvent(ctx, BreakerEvent{Route: c.route.Name, State: BreakerClosed, Paused: paused})
	c.breakerIdle()
}

func (c *consumer) cancelSession() {
	if c.session != nil && !c.brk.cancelled {
		c.brk.cancelled = true
		c.session.Cancel()
	}
}

// breakerIdle closes a cancelled session once the route holds nothing:
// its sessionEnded then reopens (see breakerSessionEnded). Called whenever
// a job is forgotten (from checkDrained).
func (c *consumer) breakerIdle() {
	if c.brk.cancelled && !c.brk.closing && len(c.jobs) == 0 && c.session != nil && c.drain == nil {
		c.brk.closing = true
		c.gate.close()
		c.session.Close()
	}
}

// breakerTrial ends the cooldown: half-open, and a session with the trial
// prefetch is opened unless the paused one is still closing (its end opens
// it) or the route drains.
func (c *consumer) breakerTrial(ctx actor.Context, msg *breakerTrial) {
	if msg.seq != c.brk.seq || c.brk.state != BreakerOpen || c.drain != nil || c.drained {
		return
	}
	c.brk.state, c.brk.okTrials = BreakerHalfOpen, 0
	c.log.Info("circuit breaker half-open: trying messages", zap.Int("trials", c.brk.p.Trials))
	c.breakerEvent(ctx, BreakerEvent{Route: c.route.Name, State: BreakerHalfOpen})
	if c.session == nil && !c.opening {
		c.requestChannel(ctx)
	}
}

// breakerSessionEnded handles the end of a session while the breaker
// matters; true means it was handled (no loss is reported, no reopen
// scheduled). A session the breaker closed reopens at once unless open
// (the trial timer opens it); a session lost while open is not reopened
// until the trial.
func (c *consumer) breakerSessionEnded(ctx actor.Context) bool {
	ours := c.brk.closing
	c.brk.cancelled, c.brk.closing = false, false
	if c.brk.state == BreakerOpen {
		return true
	}
	if ours {
		c.requestChannel(ctx)
		return true
	}
	return false
}

// breakerHolds returns a failed delivery to its queue, uncounted, while
// the breaker is open: it must wait in the queue, not in process or in
// the dead-letter queue.
func (c *consumer) breakerHolds(j *job, err error) bool {
	if c.brk.state != BreakerOpen {
		return false
	}
	c.log.Info("route paused: failed message returned to its queue", c.fields(j, err)...)
	c.state.clearFailures(j.keyOf())
	c.release(j)
	return true
}

// breakerRefuses reports whether a delivery must go straight back: the
// route is paused (it arrived before the broker processed basic.cancel).
func (c *consumer) breakerRefuses() bool {
	return c.brk.state == BreakerOpen || c.brk.cancelled
}

// breakerEvent tells the supervisor (paused / resumed) and the route's
// BreakerEvents.
func (c *consumer) breakerEvent(ctx actor.Context, ev BreakerEvent) {
	if c.route.BreakerEvents != nil {
		c.route.BreakerEvents(ev)
	}
	switch ev.State {
	case BreakerOpen:
		ctx.Send(ctx.Parent(), &supervisor.ChildPaused{Name: c.route.Name, Reason: ev.Cause, For: ev.Cooldown})
	case BreakerClosed:
		ctx.Send(ctx.Parent(), &supervisor.ChildPaused{Name: c.route.Name, Resumed: true, For: ev.Paused})
	}
}

// clearFailures forgets the message's failed attempts: it failed while
// the route's dependency was down (the breaker tripped) and goes back to
// its queue to wait, with its whole attempt budget when it comes back.
// Its crashes and requeues (poison) are kept.
func (s *routeState) clearFailures(key msgKey) {
	if key.byContent {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.lookup(key); m != nil {
		m.failures = 0
	}
}

package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// ConsumerConfig configures a consumer actor.
type ConsumerConfig struct {
	// Route is the subscription. Required.
	Route *Route
	// state outlives the actor's restarts (poison detection). Nil makes a
	// fresh one.
	state *routeState
	// Connection is the connection actor that opens channels and publishes.
	Connection *actor.PID

	// StartSession starts a consuming session; nil means
	// broker.StartSession. Its type is internal to hato: package hato sets
	// it for another transport (hatotest's in-memory broker), unit tests
	// set a fake.
	StartSession sessionStarter

	// effects routes the actor's timers and set-up jobs; nil means the real
	// ones (time.AfterFunc, the connection's set-up pool). The simulation
	// (sim_test.go) sets it to run them on its own schedule.
	effects effects
	// replyTimeout is channelReplyTimeout unless a test sets it.
	replyTimeout time.Duration
	// Liveness is where the actor publishes its progress for the
	// service's Watchdog (see Watchdog.Route); nil: not watched.
	Liveness *RouteLiveness
}

// effects are the consumer actor's side effects that do not go through its
// actor.Context: the simulation replaces them to decide when they happen.
type effects interface {
	// after sends msg to self once d passed.
	after(d time.Duration, self *actor.PID, sys *actor.ActorSystem, msg any)
	// setup runs job (a session start) on pool.
	setup(pool *broker.SetupPool, job func())
}

// realEffects are the production effects.
type realEffects struct{}

func (realEffects) after(d time.Duration, self *actor.PID, sys *actor.ActorSystem, msg any) {
	time.AfterFunc(d, func() { sys.Root.Send(self, msg) })
}

func (realEffects) setup(pool *broker.SetupPool, job func()) { pool.Go(job) }

// HandlerPanic is the failure a consumer actor reports to its supervisor
// when a handler panics. The actor is restarted; the delivery in hand goes
// back to the broker and is redelivered.
type HandlerPanic struct {
	Route     string
	MessageID string
	Value     any
	Stack     []byte
}

func (p *HandlerPanic) Error() string {
	return fmt.Sprintf("route %s: handler panicked: %v", p.Route, p.Value)
}

// ConsumerProps returns the props of a consumer actor: it asks the
// connection actor for a channel, declares the route's topology, consumes,
// runs the handler for each delivery on its own goroutine (at most
// Route.Concurrency at a time) and settles each delivery by the handler's
// outcome and the failure policy. A delivery is acked only after its handler
// returned and every publish the handler made was confirmed.
//
// The actor never blocks its mailbox: channel setup, handlers and
// dead-lettering report back as messages. On restart or stop it closes its
// channel, so every delivery it held goes back to the queue.
func ConsumerProps(cfg ConsumerConfig) *actor.Props {
	return actor.PropsFromProducer(consumerProducer(cfg), actor.WithDispatcher(newWarmDispatcher()))
}

// consumerProducer makes the incarnations of one consumer actor: what they
// share (the route's state, the handler slots) is made once here.
func consumerProducer(cfg ConsumerConfig) actor.Producer {
	if cfg.state == nil {
		cfg.state = newRouteState(0)
	}
	route := cfg.Route
	if route.Logger == nil {
		route.Logger = zap.NewNop()
	}
	if route.Concurrency <= 0 {
		route.Concurrency = 1
	}
	if route.WorkerIdle <= 0 {
		route.WorkerIdle = DefaultWorkerIdle
	}
	log := route.Logger.WithLazy(route.LogFields...)
	policy := route.Failure.WithDefaults()
	// Shared by every incarnation the props produce (restarts, respawns).
	slots := newHandlerSlots(route.Concurrency)
	if cfg.StartSession == nil {
		cfg.StartSession = startBrokerSession
	}
	if cfg.Liveness == nil {
		cfg.Liveness = &RouteLiveness{name: route.Name}
	}
	if cfg.effects == nil {
		cfg.effects = realEffects{}
	}
	if cfg.replyTimeout <= 0 {
		cfg.replyTimeout = channelReplyTimeout
	}
	return func() actor.Actor {
		return &consumer{
			route:        route,
			policy:       policy,
			state:        cfg.state,
			slots:        slots,
			conn:         cfg.Connection,
			log:          log,
			jobs:         map[uint64]*job{},
			begin:        cfg.StartSession,
			fx:           cfg.effects,
			replyTimeout: cfg.replyTimeout,
			brk:          newBreaker(route.Breaker), // outage hook
			live:         cfg.Liveness,
		}
	}
}

type stage int

const (
	queued stage = iota
	running
	confirming
	retryWait
	deadLettering
	retryDelaying // outage: its copy is being sent to a delay queue (retrydelay.go)
)

// job is one delivery the actor holds.
type job struct {
	id       uint64
	d        *broker.Delivery
	gate     *ackGate // of the session that delivered d
	key      msgKey   // for poison detection; see keyOf
	keyed    bool
	attempts int
	runs     int // handler runs of this delivery (attempts also counts earlier deliveries')
	stage    stage
	err      error
	// redeclares counts how often the dead-letter queue was declared
	// again because it refused this job's copy (see deadLetterFailed).
	redeclares int

	// Allocated with the job: the message that brought it, and its first
	// handler run (a retry's run is allocated apart: the earlier run may
	// still be referenced by its publishes).
	arrival   deliveryArrived
	first     run
	firstUsed bool
	// early: the publishes of the current attempt settled (with earlyErr)
	// before the actor saw its handlerDone.
	early    bool
	earlyErr error
}

// keyOf identifies the message across redeliveries. It is computed only
// when needed (a redelivery, a crash, a requeue), not for every delivery.
func (j *job) keyOf() msgKey {
	if !j.keyed {
		j.key, j.keyed = messageKey(j.d), true
	}
	return j.key
}

type consumer struct {
	route  *Route
	policy FailurePolicy
	state  *routeState
	slots  *handlerSlots // bounds running handlers across incarnations
	conn   *actor.PID
	log    *zap.Logger
	live   *RouteLiveness // written after every message (see liveness.go)
	self   *actor.PID
	sys    *actor.ActorSystem
	inc    uint64 // incarnation: async results of an earlier one are ignored

	ctx    context.Context // handlers' context, cancelled on stop / drain timeout
	cancel context.CancelFunc

	begin        sessionStarter
	fx           effects
	replyTimeout time.Duration
	session      consumerSession
	gate         *ackGate // the session's: acks from off the mailbox go through it
	gen          uint64   // session generation: deliveries of older ones are void
	opening      bool
	replied      bool     // the open in progress got its ChannelReply
	op           *opening // the open in progress: owns its channel and session until sessionStarted
	nonce        uint64
	openAttempt  int

	box     *settledBox // this incarnation's settled runs
	settled []*run      // reused by settledRuns
	jobs    map[uint64]*job
	queue   []*job // waiting for a handler slot, in delivery order
	running int    // handlers of this incarnation started and not reported done
	waiting int    // jobs in retryWait or confirming: each keeps its slot (see pump)
	nextID  uint64
	work    chan *run // to this incarnation's Route.Concurrency workers; nil: none run
	starts  uint64    // handler runs started, for workersIdle

	drain       *supervisor.Drain
	drainClosed bool // the session is being closed to finish the drain
	drainLate   bool // the drain's deadline passed
	drained     bool // a drain completed: this incarnation never consumes again

	brk *breaker // outage hook: the route's circuit breaker (breaker.go)
}

// ackGate lets a delivery be acked from off the mailbox (by the goroutine
// that settles its tracker) only while its session is the actor's: the
// actor closes the gate before it closes or forgets the session, so such an
// ack either comes before the session's close or is not made (the broker
// requeues the delivery, as when the actor drops a stale result).
type ackGate struct {
	mu     sync.RWMutex
	closed bool
}

// ack acks d unless the gate is closed.
func (g *ackGate) ack(d *broker.Delivery) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if !g.closed {
		d.Ack()
	}
}

// close stops acks through g; a nil gate (no session yet) has none.
func (g *ackGate) close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// Async results; each carries the incarnation that started the work, and
// the session results also the session generation. Receive drops stale ones
// in one place (see stale) before dispatching.
type (
	sessionStarted struct {
		inc, gen uint64
		s        consumerSession
		q        amqp.Queue
		err      error
	}
	// deliveryArrived is part of the job it brings (one allocation).
	deliveryArrived struct {
		inc, gen uint64
		j        *job
	}
	sessionEnded struct {
		inc, gen uint64
		err      error
	}
	handlerDone struct {
		inc, id  uint64
		attempt  int
		err      error
		panicked bool
		skipped  bool // the handler never ran: the incarnation's context ended first
		value    any
		stack    []byte
		// settled: the handler succeeded and had no publish pending when it
		// returned, so this is the delivery's only outcome: pubErr is the
		// first publish failure, and if nil the worker acked the delivery.
		settled bool
		pubErr  error
	}
	// publishesSettled follows a handlerDone that was not settled: err is
	// the first publish failure, and if nil the delivery was acked. It is
	// not a message: it goes through the incarnation's settledBox.
	publishesSettled struct {
		inc, id uint64
		attempt int
		err     error
	}
	// settledWake tells the actor that its settledBox holds runs.
	settledWake  struct{ inc uint64 }
	retryDue     struct{ inc, id uint64 }
	deadLettered struct {
		inc, id uint64
		err     error
	}
	deadLetterRetry struct{ inc, id uint64 }
	reopen          struct{ inc uint64 }
	// openTimeout ends a channel request the connection actor did not
	// answer in channelReplyTimeout (see requestChannel).
	openTimeout  struct{ inc, nonce uint64 }
	drainTimeout struct{ inc uint64 }
	// workersIdle checks whether the route started no handler since starts
	// was counted (see Route.WorkerIdle).
	workersIdle struct{ inc, starts uint64 }
)

// stamped is an async result: it carries the incarnation that started the
// work. A result of an earlier incarnation is stale.
type stamped interface{ incarnation() uint64 }

// sessioned is a result of one consuming session: it is stale once the
// session generation moved on.
type sessioned interface{ sessionGen() uint64 }

func (m *sessionStarted) incarnation() uint64  { return m.inc }
func (m *deliveryArrived) incarnation() uint64 { return m.inc }
func (m *sessionEnded) incarnation() uint64    { return m.inc }
func (m *handlerDone) incarnation() uint64     { return m.inc }
func (m *settledWake) incarnation() uint64     { return m.inc }
func (m *retryDue) incarnation() uint64        { return m.inc }
func (m *deadLettered) incarnation() uint64    { return m.inc }
func (m *deadLetterRetry) incarnation() uint64 { return m.inc }
func (m *reopen) incarnation() uint64          { return m.inc }
func (m *openTimeout) incarnation() uint64     { return m.inc }
func (m *drainTimeout) incarnation() uint64    { return m.inc }
func (m *workersIdle) incarnation() uint64     { return m.inc }

func (m *sessionStarted) sessionGen() uint64  { return m.gen }
func (m *deliveryArrived) sessionGen() uint64 { return m.gen }
func (m *sessionEnded) sessionGen() uint64    { return m.gen }

// discard closes the session a stale open started.
func (m *sessionStarted) discard() {
	if m.s != nil {
		m.s.Close()
	}
}

// Receive implements actor.Actor.
func (c *consumer) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case stamped:
		c.receiveResult(ctx, msg)
	case *actor.Started:
		c.started(ctx)
	case *actor.Restarting:
		c.restarting()
	case *actor.Stopping:
		c.stopping()
	case *ChannelReply:
		c.channelReply(msg)
	case *supervisor.Drain:
		c.startDrain(msg)
	}
	c.live.observe(c)
}

// receiveResult drops a stale async result, then dispatches a current one.
func (c *consumer) receiveResult(ctx actor.Context, msg stamped) {
	if c.stale(msg) {
		return
	}
	switch msg := msg.(type) {
	case *sessionStarted:
		c.sessionStarted(ctx, msg)
	case *deliveryArrived:
		c.arrived(ctx, msg.j)
	case *sessionEnded:
		c.sessionEnded(ctx, msg.err)
	case *handlerDone:
		c.handlerDone(ctx, msg)
	case *settledWake:
		c.settledRuns(ctx)
	case *retryDue:
		c.retryDue(msg)
	case *deadLettered:
		c.deadLettered(ctx, msg)
	case *deadLetterRetry:
		c.deadLetterRetry(ctx, msg)
	case *deadLetterQueueDeclared:
		c.deadLetterQueueDeclared(ctx, msg)
	case *reopen:
		c.reopen(ctx)
	case *openTimeout:
		c.openTimedOut(msg)
	case *drainTimeout:
		c.drainTimeout()
	case *workersIdle:
		c.workersIdle(msg)
	case outageMsg: // outage hook: breaker and delayed-retry results (breaker.go, retrydelay.go)
		msg.handle(c, ctx)
	case *livenessStall:
		c.stalled(ctx, msg)
	}
}

// stale reports whether msg comes from an earlier incarnation or session,
// releasing what it holds if so.
func (c *consumer) stale(msg stamped) bool {
	old := msg.incarnation() != c.inc
	if s, ok := msg.(sessioned); ok && s.sessionGen() != c.gen {
		old = true
	}
	if d, ok := msg.(discarder); ok && old {
		d.discard()
	}
	return old
}

func (c *consumer) started(ctx actor.Context) {
	c.self, c.sys = ctx.Self(), ctx.ActorSystem()
	c.live.pid.Store(c.self)
	c.inc = rand.Uint64()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.box = &settledBox{wake: &settledWake{inc: c.inc}, self: c.self, sys: c.sys}
	if c.state.drained.Load() {
		// An earlier incarnation was drained: this one stays idle.
		c.drained = true
		return
	}
	c.startRetryRedeclare() // outage hook
	c.requestChannel(ctx)
}

func (c *consumer) stopping() {
	c.abandon()
	if c.drain != nil {
		close(c.drain.Done)
		c.drain = nil
	}
}

// restarting lets everything go before the supervisor makes a new
// incarnation. A drain in progress is complete now (the broker gets back
// all the actor held), and the next incarnation must not consume again:
// the drain was the last thing asked of the route.
func (c *consumer) restarting() {
	c.abandon()
	if c.drain != nil {
		c.drainDone()
	}
}

// publishesSettled finishes a job once every publish its handler made is
// confirmed (the delivery was acked by whoever settled the tracker), or
// retries it when one failed.
func (c *consumer) publishesSettled(ctx actor.Context, msg *publishesSettled) {
	j := c.jobs[msg.id]
	if j == nil || msg.inc != c.inc || j.attempts != msg.attempt {
		return
	}
	switch j.stage {
	case running:
		// Its handlerDone is still in the mailbox.
		j.early, j.earlyErr = true, msg.err
	case confirming:
		c.waiting--
		c.published(ctx, j, msg.err)
		c.pump()
	}
}

// settledRuns handles the runs of the settledBox.
func (c *consumer) settledRuns(ctx actor.Context) {
	c.settled = c.box.take(c.settled)
	for i, r := range c.settled {
		c.publishesSettled(ctx, &r.settle)
		c.settled[i] = nil
	}
}

// published finishes a job whose handler succeeded, once its publishes
// settled: acked already if they were all confirmed (the ack goes from the
// goroutine that settled the tracker straight to the session, not through
// this mailbox), retried if one failed.
func (c *consumer) published(ctx actor.Context, j *job, err error) {
	if err != nil {
		c.settle(ctx, j, Retry, fmt.Errorf("publish from handler failed: %w", err))
		return
	}
	c.done(j)
}

// retryDue runs a job again once its retry backoff passed (at the front of
// the queue), or returns it to the broker while draining.
func (c *consumer) retryDue(msg *retryDue) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != retryWait {
		return
	}
	c.waiting--
	if c.drain != nil {
		c.release(j)
		return
	}
	j.stage = queued
	c.queue = append([]*job{j}, c.queue...)
	c.pump()
}

func (c *consumer) deadLetterRetry(ctx actor.Context, msg *deadLetterRetry) {
	if j := c.jobs[msg.id]; j != nil && j.stage == deadLettering {
		c.publishDeadLetter(ctx, j)
	}
}

// reopen asks for a channel again after a loss, unless the route is
// draining or drained: a reopen scheduled before the drain must not start
// consuming again after it.
func (c *consumer) reopen(ctx actor.Context) {
	if c.session == nil && !c.opening && c.drain == nil && !c.drained && c.brk.state != BreakerOpen { // outage hook: no reopen while paused
		c.requestChannel(ctx)
	}
}

// drainTimeout gives up on a drain at its deadline: handlers are cancelled
// and the session closed, so the broker gets back what is unfinished.
func (c *consumer) drainTimeout() {
	if c.drain == nil {
		return
	}
	c.log.Warn("drain deadline passed: returning unfinished deliveries to the broker",
		zap.Int("unfinished", len(c.jobs)), zap.Int("handlers_running", c.running))
	if c.drain.Unfinished != nil && len(c.jobs) > 0 {
		c.drain.Unfinished(len(c.jobs))
	}
	c.drainLate = true
	c.cancel()
	if c.session == nil && c.opening {
		c.abandonOpen() // a session still starting is closed when it does
	}
	c.finishDrain()
}

// abandonOpen gives the open in progress up: what it holds or gets later
// is closed, and its sessionStarted, if on its way, is stale.
func (c *consumer) abandonOpen() {
	c.opening = false
	c.dropOpening()
	c.gen++
}

// channelReplyTimeout bounds the wait for the connection actor's reply to
// OpenChannel. A request sent while the connection actor is stopped (being
// respawned by the root supervisor) goes to dead letters and is never
// answered (issue 17-3b). While the connection is down a request waits in
// the connection actor, so this is long: a timed-out request is abandoned
// and a new one sent after the reopen backoff.
const channelReplyTimeout = 30 * time.Second

// requestChannel asks the connection actor for a channel. The reply goes to
// an inbox of the request, which forwards it while the request is live and
// closes the channel once it is not (the actor stopped or restarted, or
// the request timed out: see openTimedOut).
func (c *consumer) requestChannel(ctx actor.Context) {
	c.opening = true
	c.replied = false
	c.nonce = rand.Uint64()
	c.after(c.replyTimeout, &openTimeout{inc: c.inc, nonce: c.nonce})
	op, self, sys := &opening{}, c.self, c.sys
	c.op = op
	inbox := newReplyInbox(sys, func(msg any) {
		r, ok := msg.(*ChannelReply)
		if ok && (r.Channel == nil || op.holdChannel(r.Channel)) {
			sys.Root.Send(self, r)
		}
	})
	ctx.Send(c.conn, &OpenChannel{ReplyTo: inbox, Nonce: c.nonce})
}

// openTimedOut abandons a channel request still unanswered: its inbox
// stays registered, so a reply that comes later still has its channel
// closed (opening.holdChannel). Then the route asks again after the reopen
// backoff, or, draining, finishes the drain.
func (c *consumer) openTimedOut(msg *openTimeout) {
	if !c.opening || c.replied || msg.nonce != c.nonce {
		return
	}
	c.abandonOpen()
	if c.drain != nil {
		c.finishDrain()
		return
	}
	c.scheduleReopen(errChannelReplyTimeout)
}

var errChannelReplyTimeout = errors.New("hato: no reply to a channel request")

// dropOpening ends the open in progress, closing what it holds.
func (c *consumer) dropOpening() {
	if c.op != nil {
		c.op.abandon()
		c.op = nil
	}
}

func (c *consumer) channelReply(msg *ChannelReply) {
	if msg.Nonce != c.nonce || !c.opening {
		// Stale: from an earlier request or incarnation.
		if msg.Channel != nil {
			go func() { _ = msg.Channel.Close() }()
		}
		return
	}
	c.replied = true
	if c.drain != nil {
		c.opening = false
		c.dropOpening()
		if msg.Channel != nil {
			go func() { _ = msg.Channel.Close() }()
		}
		c.finishDrain()
		return
	}
	if msg.Err != nil {
		c.opening = false
		c.dropOpening()
		c.scheduleReopen(fmt.Errorf("open channel: %w", msg.Err))
		return
	}
	c.gen++
	c.gate = &ackGate{}
	inc, gen, self, sys := c.inc, c.gen, c.self, c.sys
	cfg := broker.SessionConfig{
		Topology:       c.route.Topology,
		Prefetch:       c.sessionPrefetch(), // outage hook: the trial prefetch while half-open
		GlobalPrefetch: c.route.GlobalPrefetch,
		Deliver: func(d *broker.Delivery) {
			j := &job{d: d}
			j.arrival = deliveryArrived{inc: inc, gen: gen, j: j}
			sys.Root.Send(self, &j.arrival)
		},
		Closed: func(err error) {
			sys.Root.Send(self, &sessionEnded{inc: inc, gen: gen, err: err})
		},
	}
	ch, op, start := msg.Channel, c.op, c.begin
	c.fx.setup(msg.Setup, func() {
		s, q, err := start(ch, cfg)
		if err == nil && !op.holdSession(s) {
			return // the actor is gone: the session is closed, its deliveries go back
		}
		sys.Root.Send(self, &sessionStarted{inc: inc, gen: gen, s: s, q: q, err: err})
	})
}

func (c *consumer) sessionStarted(ctx actor.Context, msg *sessionStarted) {
	c.opening = false
	if c.op != nil {
		c.op.handOver()
		c.op = nil
	}
	if msg.err != nil {
		if c.drain != nil {
			c.finishDrain()
			return
		}
		if broker.Permanent(msg.err) {
			c.log.Error("route cannot consume", zap.String("queue", c.route.Topology.Queue), zap.Error(msg.err))
			ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: msg.err, Permanent: true})
			return
		}
		// Transient (e.g. 404 "home node down" of a classic queue whose
		// node is gone): say so, then retry with backoff.
		ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: msg.err})
		c.scheduleReopen(msg.err)
		return
	}
	c.session = msg.s
	c.openAttempt = 0
	if c.drain != nil {
		c.drainStarted()
		return
	}
	// Written with the route's fields by the service's logger: the route's
	// own logger stays unencoded until it has something else to say.
	fields := append(slices.Clip(c.route.LogFields),
		zap.String("queue", msg.q.Name), zap.Int("messages", msg.q.Messages),
		zap.String("exchange", c.route.Topology.ExchangeName()), zap.String("binding_key", c.route.Topology.BindingKey))
	c.route.Logger.Info("consuming", fields...)
	ctx.Send(ctx.Parent(), &supervisor.ChildReady{Name: c.route.Name})
}

// drainStarted finishes the drain with a session that started after the
// drain began (issue 17-3e): its deliveries may already be handled, so it
// is cancelled as startDrain would have, and closed once nothing is held
// (at once if the drain deadline passed meanwhile).
func (c *consumer) drainStarted() {
	c.session.Cancel()
	if c.drainLate {
		c.finishDrain()
		return
	}
	c.checkDrained()
}

func (c *consumer) scheduleReopen(err error) {
	c.openAttempt++
	delay := c.route.Reopen.Delay(c.openAttempt)
	c.log.Warn("route channel unavailable, reopening",
		zap.Error(err), zap.Int("attempt", c.openAttempt), zap.Duration("retry_in", delay))
	c.after(delay, &reopen{inc: c.inc})
}

// sessionEnded handles the end of the current session. It may come before
// the session's sessionStarted (the channel died while StartSession
// returned: a lost pool connection, a broker-side cancel): then the open
// is over too, and moving the session generation on makes that
// sessionStarted stale, so it closes the dead session instead of
// installing it and reporting ready (issue 17-3a).
func (c *consumer) sessionEnded(ctx actor.Context, err error) {
	if c.session == nil && c.opening {
		c.abandonOpen()
	} else {
		c.gen++
	}
	c.session = nil
	c.gate.close()
	c.blameRunning(err)
	// Everything held came from that channel: the broker requeued it.
	// Handlers still running finish on their own; their results are void.
	c.jobs = map[uint64]*job{}
	c.queue = nil
	c.waiting = 0
	if c.drain != nil {
		c.drainDone()
		return
	}
	if c.breakerSessionEnded(ctx) { // outage hook: the breaker closed it, or it is paused
		return
	}
	// Only a drain or a restart closes a session on purpose, and a restart
	// changes the incarnation: any other end means reopening.
	if err == nil {
		err = broker.ErrClosed
	}
	c.state.lostChannel()
	ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.route.Name, Err: err})
	c.scheduleReopen(err)
}

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

// pump starts queued jobs while a slot is free. A job keeps its slot until
// it is settled: while its handler runs, while its handler's publishes wait
// for their confirms (a publish that fails makes it run again) and while it
// waits for its retry. So Concurrency 1 keeps order across retries, those
// after a failed publish included.
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

func (c *consumer) handlerDone(ctx actor.Context, msg *handlerDone) {
	c.running--
	j := c.jobs[msg.id]
	if j == nil || j.stage != running || j.attempts != msg.attempt {
		c.pump()
		c.checkDrained()
		return
	}
	if msg.skipped {
		c.release(j)
		return
	}
	if !msg.panicked {
		c.breakerOutcome(ctx, msg.err) // outage hook: may pause the route
	}
	if msg.panicked {
		n := c.state.mark(j.keyOf())
		p := &HandlerPanic{Route: c.route.Name, MessageID: j.d.MessageId, Value: msg.value, Stack: msg.stack}
		c.log.Error("handler panicked; restarting the route's actor, the message goes back to the queue",
			zap.Any("panic", msg.value), zap.String("message_id", j.d.MessageId),
			zap.String("routing_key", j.d.RoutingKey), zap.Int("crashes", n), zap.ByteString("stack", msg.stack))
		// Let it crash: the supervisor restarts this actor. Closing the
		// channel first hands every delivery back at once instead of after
		// the restart backoff.
		c.abandon()
		panic(p)
	}
	switch action := actionOf(msg.err); {
	case action != Ack:
		c.settle(ctx, j, action, msg.err)
	case msg.settled:
		c.published(ctx, j, msg.pubErr)
	case j.early:
		j.early = false
		c.published(ctx, j, j.earlyErr)
	default:
		// Acked once every publish the handler made is confirmed: the
		// tracker reports. It keeps its slot until then.
		j.stage = confirming
		c.waiting++
	}
	c.pump()
}

// settle carries out action for j.
func (c *consumer) settle(ctx actor.Context, j *job, action Action, err error) {
	switch action {
	case Ack:
		j.d.Ack()
		c.done(j)
	case Drop:
		c.log.Warn("message dropped by handler", c.fields(j, err)...)
		j.d.Ack()
		c.done(j)
		c.event(j, Drop, err)
	case Retry:
		if c.breakerHolds(j, err) { // outage hook: paused, back to the queue uncounted
			return
		}
		c.state.fail(j.keyOf())
		if c.drain != nil {
			c.log.Warn("handler failed while draining; message returned to the queue", c.fields(j, err)...)
			c.release(j)
			return
		}
		if j.attempts >= c.policy.MaxAttempts {
			if c.delayRetry(ctx, j, err) { // outage hook: a delayed retry is left
				return
			}
			c.deadLetter(ctx, j, fmt.Errorf("failed %d attempts: %w", j.attempts, err))
			return
		}
		delay := c.policy.Backoff.Delay(j.attempts)
		c.log.Warn("handler failed; retrying", append(c.fields(j, err), zap.Duration("retry_in", delay))...)
		j.stage = retryWait
		c.waiting++
		c.after(delay, &retryDue{inc: c.inc, id: j.id})
	case Requeue:
		n := c.state.mark(j.keyOf())
		if n > c.policy.MaxRedeliveries {
			c.deadLetter(ctx, j, fmt.Errorf("requeued %d times: %w", n, err))
			return
		}
		c.log.Warn("handler asked to requeue", append(c.fields(j, err), zap.Int("requeues", n))...)
		j.d.Nack(true)
		delete(c.jobs, j.id)
		c.checkDrained()
	case DeadLetter:
		c.deadLetter(ctx, j, err)
	}
}

// release returns j to the queue without counting it against the message.
func (c *consumer) release(j *job) {
	j.d.Nack(true)
	delete(c.jobs, j.id)
	c.checkDrained()
}

// done forgets a job settled for good.
func (c *consumer) done(j *job) {
	delete(c.jobs, j.id)
	if j.keyed || j.d.Redelivered {
		// Only a message that was hashed can have a record.
		c.state.forget(j.keyOf())
	}
	c.checkDrained()
}

func (c *consumer) deadLetter(ctx actor.Context, j *job, reason error) {
	if reason == nil {
		reason = errors.New("dead-lettered by handler")
	}
	j.err = reason
	if c.policy.DeadLetterQueue == "" {
		c.log.Error("message rejected (no dead-letter queue configured)", c.fields(j, reason)...)
		j.d.Reject(false)
		c.done(j)
		c.event(j, DeadLetter, reason)
		return
	}
	j.stage = deadLettering
	c.publishDeadLetter(ctx, j)
}

func (c *consumer) publishDeadLetter(ctx actor.Context, j *job) {
	inc, id, self, sys, state, key := c.inc, j.id, c.self, c.sys, c.state, j.keyOf()
	req := deadLetterRequest(j.d, c.policy.DeadLetterQueue, c.route, j.attempts, j.err)
	stamp, _ := req.Msg.Headers[HeaderDeadLetteredAt].(string)
	ev := c.eventFor(j, DeadLetter, j.err)
	events := c.route.Events
	req.Done = func(err error) {
		if err == nil {
			// Recorded here, not in the actor: if the actor restarted
			// meanwhile, the redelivered original must still be known, and
			// the event must still be reported, exactly once.
			state.setDeadLettered(key, stamp)
			if events != nil {
				events(ev)
			}
		}
		sys.Root.Send(self, &deadLettered{inc: inc, id: id, err: err})
	}
	ctx.Send(c.conn, &Publish{Req: req})
}

func (c *consumer) deadLettered(ctx actor.Context, msg *deadLettered) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != deadLettering {
		return
	}
	if msg.err != nil {
		c.deadLetterFailed(j, msg.err, errors.Is(msg.err, broker.ErrUnroutable) || c.deadLetterFailing(ctx, msg.err))
		return
	}
	c.deadLetterRecovered(ctx)
	// The designed outcome for a bad message, not a fault of hato's: a
	// warning, without a stack trace of actor internals.
	c.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Warn("message dead-lettered",
		append(c.fields(j, j.err), zap.String("dead_letter_queue", c.policy.DeadLetterQueue))...)
	j.d.Ack()
	delete(c.jobs, j.id)
	c.checkDrained()
}

func (c *consumer) startDrain(msg *supervisor.Drain) {
	if c.drain != nil || c.drained {
		// Already draining (the first drain reports) or drained: this
		// incarnation holds nothing and never consumes again.
		close(msg.Done)
		return
	}
	c.drain = msg
	c.after(time.Until(msg.Deadline), &drainTimeout{inc: c.inc})
	if c.session != nil {
		c.session.Cancel()
	}
	for _, j := range c.queue {
		j.d.Nack(true)
		delete(c.jobs, j.id)
	}
	c.queue = nil
	for _, j := range c.jobs {
		if j.stage == retryWait {
			c.waiting--
			c.release(j)
		}
	}
	c.checkDrained()
}

// checkDrained finishes a drain once nothing is held.
func (c *consumer) checkDrained() {
	if c.drain != nil && len(c.jobs) == 0 {
		c.finishDrain()
	}
	c.breakerIdle() // outage hook: close a paused session once idle
}

// finishDrain closes the session (the broker requeues whatever is still
// unsettled); sessionEnded then completes the drain.
func (c *consumer) finishDrain() {
	if c.drainClosed {
		return
	}
	if c.session == nil {
		if !c.opening {
			c.drainDone()
		}
		// An open in progress ends in sessionStarted, which comes back here.
		return
	}
	c.drainClosed = true
	c.gate.close()
	c.session.Close()
}

// drainDone completes the drain: from now on the route stays idle.
func (c *consumer) drainDone() {
	close(c.drain.Done)
	c.drain = nil
	c.drained = true
	c.state.drained.Store(true)
}

// abandon cancels handlers and closes the channel: the broker redelivers
// everything this actor held.
func (c *consumer) abandon() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.work != nil {
		close(c.work)
		c.work = nil
	}
	c.gate.close()
	if c.session != nil {
		c.session.Close()
		c.session = nil
	}
	c.dropOpening()
	c.jobs = map[uint64]*job{}
	c.queue = nil
	c.waiting = 0
}

func (c *consumer) after(d time.Duration, msg any) {
	c.fx.after(d, c.self, c.sys, msg)
}

// fields are the log fields of a job. The route's name and routing key
// are not among them: the consumer's
// logger carries them (Route.LogFields), and a JSON line must not hold a
// key twice. The delivery's own routing key (which a wildcard route's
// differs from) is delivery_routing_key; message_id only when it is not
// the message uuid.
func (c *consumer) fields(j *job, err error) []zap.Field {
	f := []zap.Field{
		zap.String("queue", c.route.Topology.Queue),
		zap.String("delivery_routing_key", j.d.RoutingKey),
		zap.Int("attempts", j.attempts),
		zap.Bool("redelivered", j.d.Redelivered),
	}
	var mu interface{ MessageUUID() string }
	uuid := ""
	if errors.As(err, &mu) {
		uuid = mu.MessageUUID()
	}
	if j.d.MessageId != "" && j.d.MessageId != uuid {
		f = append(f, zap.String("message_id", j.d.MessageId))
	}
	if uuid != "" {
		f = append(f, zap.String("message_uuid", uuid))
	}
	if err != nil {
		f = append(f, zap.Error(err))
	}
	return f
}

func (c *consumer) event(j *job, action Action, err error) {
	if c.route.Events != nil {
		c.route.Events(c.eventFor(j, action, err))
	}
}

func (c *consumer) eventFor(j *job, action Action, err error) DeliveryEvent {
	ev := DeliveryEvent{
		Route: c.route.Name, Action: action, MessageID: j.d.MessageId, RoutingKey: j.d.RoutingKey,
		Attempts: j.attempts, Err: err,
	}
	if action == DeadLetter || action == Requeue {
		ev.DeadLetterQ = c.policy.DeadLetterQueue
	}
	return ev
}

// deliveryCount reads the x-delivery-count header quorum queues set.
func deliveryCount(h amqp.Table) (int64, bool) {
	switch v := h["x-delivery-count"].(type) {
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int16:
		return int64(v), true
	case int8:
		return int64(v), true
	case int:
		return int64(v), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	}
	return 0, false
}

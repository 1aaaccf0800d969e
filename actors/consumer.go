package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	// Direct is the connection actor's ConnectionConfig.Direct: dead-letter
	// and delayed-retry copies are posted through it (DirectPublish.Post),
	// so a copy the connection actor drops with its mailbox at a stop is
	// still resolved. Nil: plain Publish messages.
	Direct *DirectPublish

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
			direct:       cfg.Direct,
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
	direct *DirectPublish
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
	waiting int    // jobs in retryWait, or confirming with StrictOrder: each keeps its slot (see pump)
	nextID  uint64
	work    chan *run // to this incarnation's Route.Concurrency workers; nil: none run
	starts  uint64    // handler runs started, for workersIdle

	drain       *supervisor.Drain
	drainClosed bool // the session is being closed to finish the drain
	drainLate   bool // the drain's deadline passed
	// drainCount is what the drain did, logged when it completes.
	drainCount struct{ returned, held, unfinished int }
	drained    bool // a drain completed: this incarnation never consumes again

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
	if !c.sessionResult(ctx, msg) {
		c.jobResult(ctx, msg)
	}
}

// sessionResult dispatches a result about the route's session, timers and
// workers; it reports whether msg was one.
func (c *consumer) sessionResult(ctx actor.Context, msg stamped) bool {
	switch msg := msg.(type) {
	case *sessionStarted:
		c.sessionStarted(ctx, msg)
	case *sessionEnded:
		c.sessionEnded(ctx, msg.err)
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
	default:
		return false
	}
	return true
}

// jobResult dispatches a result about one delivery's job.
func (c *consumer) jobResult(ctx actor.Context, msg stamped) {
	switch msg := msg.(type) {
	case *deliveryArrived:
		c.arrived(ctx, msg.j)
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
		ev.DeadLetterQueue = c.policy.DeadLetterQueue
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

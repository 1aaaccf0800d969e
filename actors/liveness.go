package actors

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	hatosup "github.com/hato-go/hato/supervisor"
)

// Liveness errors. A route the watchdog found stuck reports an error
// wrapping ErrStalled (to its supervisor, so readiness and events say so);
// a route whose dead-letter copies the broker keeps refusing reports one
// wrapping ErrDeadLetterFailing.
var (
	ErrStalled           = errors.New("hato: route stalled")
	ErrDeadLetterFailing = errors.New("hato: dead-lettering failing")
)

// Liveness defaults (see LivenessConfig).
const (
	DefaultLivenessInterval  = 2 * time.Second
	DefaultStallAfter        = 5 * time.Second
	DefaultUnhealthyAfter    = 60 * time.Second
	DefaultChecksPerInterval = 200
)

// LivenessConfig configures a Watchdog. Zero fields take the defaults.
type LivenessConfig struct {
	// Interval is how often the watchdog looks at every route (cheap: a
	// few atomic loads per route).
	Interval time.Duration
	// StallAfter is how long a consuming route must have had nothing in
	// flight and nothing arriving before the watchdog asks the broker
	// about its queue (a passive declare).
	StallAfter time.Duration
	// UnhealthyAfter is how long a route may stay stuck before Stuck
	// reports it as unhealthy (for /healthz).
	UnhealthyAfter time.Duration
	// ChecksPerInterval bounds the passive declares of one look, so that
	// many idle routes are checked in turns, never all at once.
	ChecksPerInterval int
	// Logger logs verdicts; nil logs nothing.
	Logger *zap.Logger
}

func (c LivenessConfig) withDefaults() LivenessConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultLivenessInterval
	}
	if c.StallAfter <= 0 {
		c.StallAfter = DefaultStallAfter
	}
	if c.UnhealthyAfter <= 0 {
		c.UnhealthyAfter = DefaultUnhealthyAfter
	}
	if c.ChecksPerInterval <= 0 {
		c.ChecksPerInterval = DefaultChecksPerInterval
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// RouteLiveness is what a consumer actor publishes about itself for the
// watchdog. The actor is its only writer (atomic stores from its
// goroutine); the watchdog reads it with atomic loads and never touches the
// actor's own fields. The zero value is not used: see Watchdog.Route (or
// ConsumerProps, which makes an unwatched one).
type RouteLiveness struct {
	name, queue string

	pid      atomic.Pointer[actor.PID]
	view     atomic.Pointer[liveView] // nil: not consuming
	held     atomic.Int64             // deliveries the actor holds
	arrivals atomic.Uint64            // deliveries that arrived, ever
	refused  atomic.Pointer[stuck]    // dead-lettering failing since

	lastID uint64 // the actor's: its nextID when arrivals last moved

	w watch // the watchdog's goroutine's only
}

// liveView is a consuming session as the actor sees it: immutable, replaced
// when the session changes.
type liveView struct {
	inc, gen uint64
	s        consumerSession
}

// stuck is why and since when a route is stuck.
type stuck struct {
	cause error
	since time.Time
}

// watch is the watchdog's bookkeeping of one route.
type watch struct {
	arrivals   uint64
	gen        uint64
	idleSince  time.Time
	suspect    error // seen once; a second look confirms it
	suspectGen uint64
}

// alive is what a session may tell about itself: false once its channel is
// gone. broker.Session and hatotest's sessions implement it.
type alive interface{ Alive() bool }

// livenessStall tells the actor the watchdog found its session stuck.
type livenessStall struct {
	inc, gen uint64
	cause    error
}

func (m *livenessStall) incarnation() uint64 { return m.inc }
func (m *livenessStall) sessionGen() uint64  { return m.gen }

// observe publishes the actor's state after each message (see Receive):
// whether it consumes and on which session, what it holds, whether
// deliveries arrived. Only stores that changed are made: on the hot path
// it costs a few atomic loads and, when a delivery arrived or was
// settled, one or two atomic stores.
func (l *RouteLiveness) observe(c *consumer) {
	var s consumerSession
	if c.drain == nil && !c.drained {
		s = c.session
	}
	v := l.view.Load()
	switch {
	case s == nil && v != nil:
		l.view.Store(nil)
	case s != nil && (v == nil || v.s != s || v.gen != c.gen):
		l.view.Store(&liveView{inc: c.inc, gen: c.gen, s: s})
	}
	if n := int64(len(c.jobs)); l.held.Load() != n {
		l.held.Store(n)
		if n == 0 && l.refused.Load() != nil {
			// The held message went back to the broker (a lost session,
			// a restart): nothing waits on dead-lettering any more. If
			// it comes back and fails again, the route says so again.
			l.refused.Store(nil)
		}
	}
	if c.nextID != l.lastID {
		l.lastID = c.nextID
		l.arrivals.Add(1)
	}
}

// refuse records a failed dead-letter copy; it reports whether the route
// was not failing to dead-letter before (log loudly and report once).
func (l *RouteLiveness) refuse(err error) bool {
	if l.refused.Load() != nil {
		return false
	}
	l.refused.Store(&stuck{cause: fmt.Errorf("%w: %w", ErrDeadLetterFailing, err), since: time.Now()})
	return true
}

// unrefuse clears the record once a copy was confirmed; it reports whether
// there was one.
func (l *RouteLiveness) unrefuse() bool {
	return l.refused.Swap(nil) != nil
}

// stalled handles the watchdog's verdict on the current session: it is
// closed and forgotten at once (its Closed may never come), the session
// generation moves on so anything the old session still reports is
// stale, and the route reports the cause and reopens as after a lost
// channel.
func (c *consumer) stalled(ctx actor.Context, msg *livenessStall) {
	if c.session == nil || c.drain != nil || c.drained {
		return
	}
	s := c.session
	c.gen++
	s.Close()
	c.log.Warn("route stalled: closing its channel and reopening", zap.Error(msg.cause))
	c.sessionEnded(ctx, msg.cause)
}

// deadLetterFailing reports a failed dead-letter copy to the supervisor
// the first time in a run of failures (not ready, with the cause); it
// reports whether this was the first.
func (c *consumer) deadLetterFailing(ctx actor.Context, err error) bool {
	if !c.live.refuse(err) {
		return false
	}
	ctx.Send(ctx.Parent(), &hatosup.ChildFailed{Name: c.route.Name, Err: c.live.refused.Load().cause})
	return true
}

// deadLetterRecovered reports the route ready again once a dead-letter
// copy went through after failures.
func (c *consumer) deadLetterRecovered(ctx actor.Context) {
	if c.live.unrefuse() && c.session != nil {
		c.log.Info("dead-lettering works again")
		ctx.Send(ctx.Parent(), &hatosup.ChildReady{Name: c.route.Name})
	}
}

// Stuck is a route the watchdog found stuck.
type Stuck struct {
	Route string
	Cause error
	Since time.Time
	// Unhealthy: stuck for LivenessConfig.UnhealthyAfter or longer.
	Unhealthy bool
}

// Watchdog watches a service's routes for progress: one goroutine (run)
// that looks at every route each Interval. It reads what the actors
// publish (RouteLiveness, atomics only), asks the broker about idle routes
// on one checker channel of its own (passive declares, at most
// ChecksPerInterval a look, one at a time), and sends a verdict to a stuck
// route's actor as a message. Start and Stop are called once each, by the
// service.
type Watchdog struct {
	cfg    LivenessConfig
	routes []*RouteLiveness

	sys  *actor.ActorSystem
	conn *actor.PID
	ch   *amqp.Channel // the checker channel; the goroutine's only
	none bool          // the transport hands out no channels (in-memory)

	mu    sync.Mutex
	stuck map[string]stuck // by route

	cursor int              // where the next look starts checking queues
	idle   []*RouteLiveness // a look's routes due for a check (reused)
	stop   chan struct{}
	done   chan struct{}
}

// NewWatchdog returns a watchdog for the routes made with Route.
func NewWatchdog(cfg LivenessConfig) *Watchdog {
	return &Watchdog{cfg: cfg.withDefaults(), stuck: map[string]stuck{}}
}

// Route adds a route; its actor publishes to the returned state (pass it
// as ConsumerConfig.Liveness). Call before Start.
func (w *Watchdog) Route(name string, topo broker.Topology) *RouteLiveness {
	l := &RouteLiveness{name: name, queue: topo.Queue}
	w.routes = append(w.routes, l)
	return l
}

// Start starts the watchdog's goroutine; it opens its checker channel
// through the connection actor conn when it first needs it.
func (w *Watchdog) Start(sys *actor.ActorSystem, conn *actor.PID) {
	w.sys, w.conn = sys, conn
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go w.run()
}

// Stop stops the goroutine and closes the checker channel. It blocks
// until both are done, for at most stopWait: a passive declare stuck on a
// dead network returns only when the heartbeat closes the connection, and
// Stop must not wait for that (the goroutine exits then). Safe without
// Start; call it once.
func (w *Watchdog) Stop() {
	if w.stop == nil {
		return
	}
	close(w.stop)
	t := time.NewTimer(stopWait)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		w.cfg.Logger.Warn("liveness watchdog still in a broker call; not waiting for it")
	}
}

// stopWait bounds how long Stop waits for the watchdog's goroutine.
const stopWait = 5 * time.Second

// Stuck returns the routes stuck now.
func (w *Watchdog) Stuck() []Stuck {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]Stuck, 0, len(w.stuck))
	for _, r := range w.routes {
		if s, ok := w.stuck[r.name]; ok {
			out = append(out, Stuck{Route: r.name, Cause: s.cause, Since: s.since,
				Unhealthy: now.Sub(s.since) >= w.cfg.UnhealthyAfter})
		}
	}
	return out
}

func (w *Watchdog) run() {
	defer close(w.done)
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			if w.ch != nil {
				_ = w.ch.Close()
			}
			return
		case now := <-t.C:
			w.look(now)
		}
	}
}

// look looks at every route once: the cheap checks for all, then passive
// declares for the idle ones, within the budget, starting where the last
// look's budget ran out.
func (w *Watchdog) look(now time.Time) {
	idle := w.idle[:0]
	n := len(w.routes)
	for i := range n {
		r := w.routes[(w.cursor+i)%n]
		if w.quick(r, now) {
			idle = append(idle, r)
		}
	}
	w.idle = idle
	checked := 0
	for _, r := range idle {
		if checked == w.cfg.ChecksPerInterval {
			w.cursor = w.indexOf(r)
			return
		}
		checked++
		w.checkQueue(r, now)
	}
}

func (w *Watchdog) indexOf(r *RouteLiveness) int {
	for i, x := range w.routes {
		if x == r {
			return i
		}
	}
	return 0
}

// quick makes the checks that need no broker; it reports whether r is due
// for a queue check (consuming, idle for StallAfter).
func (w *Watchdog) quick(r *RouteLiveness, now time.Time) bool {
	st := &r.w
	if ref := r.refused.Load(); ref != nil {
		w.setStuck(r, *ref)
		return false
	}
	v := r.view.Load()
	if v == nil {
		// Not consuming: opening, reconnecting or draining; the route
		// reports that itself. A stuck mark stays until progress.
		st.suspect, st.idleSince = nil, now
		return false
	}
	arr, held := r.arrivals.Load(), r.held.Load()
	moved := arr != st.arrivals
	if moved || v.gen != st.gen || held > 0 {
		st.arrivals, st.gen, st.idleSince, st.suspect = arr, v.gen, now, nil
		if moved {
			w.clearStuck(r)
		}
		return false
	}
	if a, ok := v.s.(alive); ok && !a.Alive() {
		w.suspectOrStall(r, v, fmt.Errorf("%w: its channel is closed but the route was not told", ErrStalled), now)
		return false
	}
	return now.Sub(st.idleSince) >= w.cfg.StallAfter
}

// checkQueue asks the broker about r's queue (a passive declare on the
// checker channel). A live consumer with room and nothing in flight gets
// ready messages at once: ready messages on two looks in a row, or no
// consumer at all, mean the route is stuck.
func (w *Watchdog) checkQueue(r *RouteLiveness, now time.Time) {
	v := r.view.Load()
	if v == nil {
		return
	}
	if !w.channel() {
		// Nothing to ask: a live session with nothing in flight is fine.
		r.w.suspect = nil
		w.clearStuck(r)
		r.w.idleSince = now
		return
	}
	q, err := w.ch.QueueDeclarePassive(r.queue, false, false, false, false, nil)
	var cause error
	switch {
	case err != nil:
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
			return // the channel failed: no verdict; reopened next look
		}
		cause = fmt.Errorf("%w: its queue %q does not exist", ErrStalled, r.queue)
	case q.Consumers == 0:
		cause = fmt.Errorf("%w: its queue %q has no consumer: the broker no longer delivers to the route", ErrStalled, r.queue)
	case q.Messages > 0:
		cause = fmt.Errorf("%w: %d messages ready in %q, none delivered for %s", ErrStalled, q.Messages, r.queue, now.Sub(r.w.idleSince).Round(time.Second))
	}
	if cause == nil {
		r.w.suspect, r.w.idleSince = nil, now
		w.clearStuck(r)
		return
	}
	w.suspectOrStall(r, v, cause, now)
}

// suspectOrStall records cause on a first look; on a second look at the
// same session it sends the verdict to the route's actor and marks the
// route stuck.
func (w *Watchdog) suspectOrStall(r *RouteLiveness, v *liveView, cause error, now time.Time) {
	st := &r.w
	if st.suspect == nil || st.suspectGen != v.gen {
		st.suspect, st.suspectGen = cause, v.gen
		return
	}
	st.suspect = nil
	w.cfg.Logger.Warn("route stuck", zap.String("route", r.name), zap.Error(cause))
	w.setStuck(r, stuck{cause: cause, since: now})
	if pid := r.pid.Load(); pid != nil {
		w.sys.Root.Send(pid, &livenessStall{inc: v.inc, gen: v.gen, cause: cause})
	}
}

// setStuck marks r stuck, keeping the first time it was.
func (w *Watchdog) setStuck(r *RouteLiveness, s stuck) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.stuck[r.name]; ok {
		s.since = old.since
	}
	w.stuck[r.name] = s
}

func (w *Watchdog) clearStuck(r *RouteLiveness) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.stuck[r.name]; ok && r.refused.Load() == nil {
		delete(w.stuck, r.name)
		w.cfg.Logger.Info("route makes progress again", zap.String("route", r.name))
	}
}

// channel makes sure the checker channel is open; false if there is none
// (none to be had, or the connection actor did not answer in time).
func (w *Watchdog) channel() bool {
	if w.none {
		return false
	}
	if w.ch != nil && !w.ch.IsClosed() {
		return true
	}
	w.ch = nil
	replies := make(chan *ChannelReply, 1)
	nonce := uint64(time.Now().UnixNano())
	inbox := newReplyInbox(w.sys, func(msg any) {
		r, ok := msg.(*ChannelReply)
		if !ok {
			return
		}
		select {
		case replies <- r:
		default:
			if r.Channel != nil {
				go func() { _ = r.Channel.Close() }()
			}
		}
	})
	w.sys.Root.Send(w.conn, &OpenChannel{ReplyTo: inbox, Nonce: nonce})
	select {
	case r := <-replies:
		if r.Err != nil {
			return false
		}
		if r.Channel == nil {
			w.none = true
			return false
		}
		w.ch = r.Channel
		return true
	case <-time.After(w.cfg.Interval):
	case <-w.stop:
	}
	// Given up: fill the slot so that a late reply's channel is closed by
	// the inbox, or close the one that came meanwhile.
	select {
	case replies <- &ChannelReply{}:
	case r := <-replies:
		if r.Channel != nil {
			go func() { _ = r.Channel.Close() }()
		}
	}
	return false
}

package supervisor

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
)

// ChildSpec describes one child of the root supervisor.
type ChildSpec struct {
	// Name is unique among the root's children; the child's PID id is
	// "<root id>/<Name>".
	Name string
	// Props makes the child. Each restart or respawn makes a new instance.
	Props *actor.Props
	// Policy governs its restarts. The zero value means DefaultPolicy.
	Policy Policy
}

// Config configures the root supervisor.
type Config struct {
	// Children are spawned in order when the root starts.
	Children []ChildSpec
	// OnEvent, when set, receives every supervision event, from the root's
	// mailbox goroutine: it must not block.
	OnEvent func(Event)
	// Logger receives every event too. Nil means zap.NewNop().
	Logger *zap.Logger
	// Spawned, when set, is called from the root's mailbox goroutine once
	// every child was spawned. Send to a child's PID from another goroutine
	// only after it: protoactor registers a spawned actor's process before
	// it sets up its mailbox, and a message sent in between races with that.
	Spawned func()
}

// ErrGaveUp is the reason reported when a child exhausted its restart budget.
var ErrGaveUp = errors.New("hato/supervisor: restart budget exhausted")

// Props returns the root supervisor's props. The root spawns cfg.Children,
// restarts a crashed child after its policy's backoff, spawns again a child
// stopped from outside, stops a child that exhausts its budget or fails
// permanently (reporting EventGaveUp, never silently), and answers
// AwaitReady and DrainChildren.
func Props(cfg Config) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return newRoot(cfg) })
}

type child struct {
	spec     ChildSpec
	pid      *actor.PID
	restarts restarts
	ready    bool
	gaveUp   bool
	draining bool
	// suspended is set while the child crashed and waits out its restart
	// backoff: its mailbox is suspended, so it handles no Drain.
	suspended bool
	pending   uint64 // sequence of the scheduled restart or respawn
}

type root struct {
	cfg      Config
	log      *zap.Logger
	children map[string]*child
	order    []string
	byID     map[string]*child // PID id → child
	awaiting []chan error
	failure  error // first permanent failure, for late AwaitReady
	stopping bool
	self     *actor.PID
	sys      *actor.ActorSystem
}

func newRoot(cfg Config) *root {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &root{cfg: cfg, log: log, children: map[string]*child{}, byID: map[string]*child{}}
}

// Receive implements actor.Actor.
func (r *root) Receive(ctx actor.Context) {
	msg := ctx.Message()
	if s, ok := msg.(scheduled); ok && r.stale(s) {
		return
	}
	switch msg := msg.(type) {
	case *actor.Started:
		r.started(ctx)
	case *actor.Stopping:
		r.stop()
	case *ChildReady:
		r.childReady(msg)
	case *ChildFailed:
		r.childFailed(ctx, msg)
	case *ChildPaused:
		r.childPaused(msg)
	case *actor.Terminated:
		r.terminated(msg.Who)
	case *restartDue:
		r.restart(ctx, r.children[msg.name])
	case *respawnDue:
		r.respawn(ctx, r.children[msg.name])
	case *AwaitReady:
		r.awaitReady(msg)
	case *DrainChildren:
		r.drain(ctx, msg)
	}
}

// stale reports whether a scheduled restart or respawn was overtaken: its
// child is unknown, scheduled something newer, gave up, or the root stops.
func (r *root) stale(msg scheduled) bool {
	name, seq := msg.scheduledFor()
	c := r.children[name]
	return c == nil || c.pending != seq || c.gaveUp || r.stopping
}

func (r *root) started(ctx actor.Context) {
	r.self, r.sys = ctx.Self(), ctx.ActorSystem()
	for _, spec := range r.cfg.Children {
		c := &child{spec: spec, restarts: restarts{policy: spec.Policy.withDefaults()}}
		r.children[spec.Name] = c
		r.order = append(r.order, spec.Name)
		r.spawn(ctx, c)
	}
	if r.cfg.Spawned != nil {
		r.cfg.Spawned()
	}
}

func (r *root) stop() {
	r.stopping = true
	r.resolveAwaiting(errors.New("hato/supervisor: stopped"))
}

// childReady counts every time: after a reconnection or a restart too, so
// recovery is observable.
func (r *root) childReady(msg *ChildReady) {
	if c := r.children[msg.Name]; c != nil {
		c.ready = true
		r.emit(Event{Kind: EventReady, Child: msg.Name, Detail: msg.Detail})
		r.checkReady()
	}
}

func (r *root) childFailed(ctx actor.Context, msg *ChildFailed) {
	c := r.children[msg.Name]
	if c == nil {
		return
	}
	if !msg.Permanent {
		r.emit(Event{Kind: EventUnavailable, Child: msg.Name, Reason: msg.Err, Detail: msg.Detail})
		return
	}
	r.giveUp(func(pid *actor.PID) { ctx.Stop(pid) }, c, msg.Err)
}

// restart restarts a crashed child once its backoff passed.
func (r *root) restart(ctx actor.Context, c *child) {
	sup, ok := ctx.(actor.Supervisor)
	if c.pid == nil || !ok {
		return
	}
	c.suspended = false
	sup.RestartChildren(c.pid)
	r.emit(Event{Kind: EventRestarted, Child: c.spec.Name, Failures: c.restarts.streak})
}

// respawn spawns again a child stopped from outside once its backoff passed.
func (r *root) respawn(ctx actor.Context, c *child) {
	if c.pid != nil {
		return
	}
	r.spawn(ctx, c)
	r.emit(Event{Kind: EventRespawned, Child: c.spec.Name, Failures: c.restarts.streak})
}

func (r *root) awaitReady(msg *AwaitReady) {
	r.awaiting = append(r.awaiting, msg.Done)
	r.checkReady()
}

func (r *root) spawn(ctx actor.Context, c *child) {
	pid, err := ctx.SpawnNamed(c.spec.Props, c.spec.Name)
	if err != nil {
		// The name is taken only while an old instance is still
		// registered; its Terminated will come and respawn it.
		r.log.Error("spawn failed", zap.String("child", c.spec.Name), zap.Error(err))
		return
	}
	c.pid = pid
	r.byID[pid.Id] = c
}

// HandleFailure implements actor.SupervisorStrategy: the root is its own
// children's strategy. It runs on the root's mailbox goroutine.
func (r *root) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, who *actor.PID, _ *actor.RestartStatistics, reason any, _ any) {
	c := r.byID[who.Id]
	if c == nil || r.stopping || c.draining {
		sup.StopChildren(who)
		return
	}
	err := asError(reason)
	delay, streak, ok := c.restarts.fail(time.Now())
	if !ok {
		r.giveUp(func(pid *actor.PID) { sup.StopChildren(pid) }, c, fmt.Errorf("%w after %d restarts within %s: last failure: %w",
			ErrGaveUp, c.restarts.policy.MaxRestarts, c.restarts.policy.Window, err))
		return
	}
	c.pending++
	c.suspended = true
	r.emit(Event{Kind: EventFailed, Child: c.spec.Name, Reason: err, Failures: streak, Delay: delay})
	r.after(delay, &restartDue{name: c.spec.Name, seq: c.pending})
}

// after sends msg to the root itself after d.
func (r *root) after(d time.Duration, msg any) {
	self, sys := r.self, r.sys
	time.AfterFunc(d, func() { sys.Root.Send(self, msg) })
}

func (r *root) terminated(who *actor.PID) {
	c := r.byID[who.Id]
	if c == nil {
		return
	}
	delete(r.byID, who.Id)
	if c.pid == nil || c.pid.Id != who.Id {
		return
	}
	c.pid = nil
	if r.stopping || c.gaveUp || c.draining {
		return
	}
	reason := errors.New("stopped from outside the supervisor")
	delay, streak, ok := c.restarts.fail(time.Now())
	if !ok {
		c.gaveUp = true
		r.failed(c, fmt.Errorf("%w: %w", ErrGaveUp, reason))
		return
	}
	c.pending++
	r.emit(Event{Kind: EventStopped, Child: c.spec.Name, Reason: reason, Failures: streak, Delay: delay})
	r.after(delay, &respawnDue{name: c.spec.Name, seq: c.pending})
}

func (r *root) giveUp(stop func(*actor.PID), c *child, err error) {
	if c.gaveUp {
		return
	}
	c.gaveUp = true
	c.pending++
	if c.pid != nil {
		stop(c.pid)
	}
	r.failed(c, err)
}

func (r *root) failed(c *child, err error) {
	r.emit(Event{Kind: EventGaveUp, Child: c.spec.Name, Reason: err, Failures: c.restarts.streak})
	if r.failure == nil {
		r.failure = fmt.Errorf("%s: %w", c.spec.Name, err)
	}
	r.resolveAwaiting(r.failure)
}

func (r *root) checkReady() {
	if len(r.awaiting) == 0 {
		return
	}
	if r.failure != nil {
		r.resolveAwaiting(r.failure)
		return
	}
	for _, c := range r.children {
		if !c.ready {
			return
		}
	}
	r.resolveAwaiting(nil)
}

func (r *root) resolveAwaiting(err error) {
	for _, ch := range r.awaiting {
		select {
		case ch <- err:
		default:
		}
	}
	r.awaiting = nil
}

func (r *root) drain(ctx actor.Context, msg *DrainChildren) {
	names := msg.Names
	if len(names) == 0 {
		names = r.order
	}
	var waits []chan struct{}
	for _, name := range names {
		if done := r.drainChild(ctx, r.children[name], msg); done != nil {
			waits = append(waits, done)
		}
	}
	go func() {
		// A child that cannot honour its deadline (blocked in a call) must
		// not hold up shutdown for long.
		timeout := time.NewTimer(time.Until(msg.Deadline) + time.Second)
		defer timeout.Stop()
		for _, w := range waits {
			select {
			case <-w:
			case <-timeout.C:
				close(msg.Done)
				return
			}
		}
		close(msg.Done)
	}()
}

// drainChild sends c a Drain and returns the channel it closes when
// drained, or nil when there is nothing to wait for. A child in restart
// backoff would never see the Drain (its mailbox is suspended): it already
// crashed and its restart would abandon its work, so it is stopped now
// instead of restarted later.
func (r *root) drainChild(ctx actor.Context, c *child, msg *DrainChildren) chan struct{} {
	if c == nil || c.draining {
		return nil
	}
	c.draining = true
	c.pending++ // cancels a scheduled restart or respawn
	if c.pid == nil {
		return nil
	}
	if c.suspended {
		c.suspended = false
		ctx.Stop(c.pid)
		return nil
	}
	done := make(chan struct{})
	d := &Drain{Deadline: msg.Deadline, Done: done}
	if report := msg.Unfinished; report != nil {
		name := c.spec.Name
		d.Unfinished = func(n int) { report(name, n) }
	}
	ctx.Send(c.pid, d)
	return done
}

func (r *root) emit(e Event) {
	e.Time = time.Now()
	fields := []zap.Field{zap.String("child", e.Child), zap.Stringer("event", e.Kind)}
	if e.Failures > 0 {
		fields = append(fields, zap.Int("failures", e.Failures))
	}
	if e.Delay > 0 {
		fields = append(fields, zap.Duration("restart_in", e.Delay))
	}
	if e.Reason != nil {
		fields = append(fields, zap.Error(e.Reason))
	}
	if e.Detail != "" {
		fields = append(fields, zap.String("detail", e.Detail))
	}
	switch e.Kind {
	case EventGaveUp:
		r.log.Error("supervision: child gave up", fields...)
	case EventFailed, EventStopped:
		r.log.Warn("supervision: child failed", fields...)
	case EventUnavailable:
		r.log.Warn("supervision: child unavailable, recovering", fields...)
	case EventReady:
		// The child says so itself at info ("connected", "consuming"):
		// a second line per route at start-up is noise.
		r.log.Debug("supervision", fields...)
	default:
		r.log.Info("supervision", fields...)
	}
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(e)
	}
}

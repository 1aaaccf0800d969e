package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/supervisor"
)

// The actors' unit tests run a consumer actor against a fake connection
// actor and fake consuming sessions (no broker; they run in both test
// layers). The broker tests of the hato package are the integration layer.

func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
}

const waitLimit = 10 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// newSystem is an actor system that logs nothing, shut down on cleanup.
func newSystem(t *testing.T) *actor.ActorSystem {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	t.Cleanup(sys.Shutdown)
	return sys
}

// fakeSession stands in for a broker.Session: the test delivers through it
// and it records how the actor settles each delivery (as amqp.Acknowledger)
// and whether it cancelled or closed the session.
type fakeSession struct {
	cfg broker.SessionConfig

	mu        sync.Mutex
	log       []string // "ack 1", "nack 2 requeue", "reject 3", "cancel", "close"
	ended     bool     // Closed was called: later settlements are stale
	lateOps   []string // settlements after the session ended
	cancelled bool
}

func (s *fakeSession) record(e string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		s.lateOps = append(s.lateOps, e)
		return
	}
	s.log = append(s.log, e)
}

func (s *fakeSession) Ack(tag uint64, _ bool) error {
	s.record(fmt.Sprintf("ack %d", tag))
	return nil
}

func (s *fakeSession) Nack(tag uint64, _ bool, requeue bool) error {
	if requeue {
		s.record(fmt.Sprintf("nack %d requeue", tag))
	} else {
		s.record(fmt.Sprintf("nack %d", tag))
	}
	return nil
}

func (s *fakeSession) Reject(tag uint64, requeue bool) error {
	if requeue {
		s.record(fmt.Sprintf("reject %d requeue", tag))
	} else {
		s.record(fmt.Sprintf("reject %d", tag))
	}
	return nil
}

func (s *fakeSession) Cancel() {
	s.record("cancel")
	s.mu.Lock()
	s.cancelled = true
	s.mu.Unlock()
}

// Close ends the session as the actor asked: Closed(nil), like broker's.
func (s *fakeSession) Close() {
	s.record("close")
	s.end(nil)
}

// end ends the session (err non-nil: the channel died), once.
func (s *fakeSession) end(err error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.mu.Unlock()
	s.cfg.Closed(err)
}

// delivery is a delivery of this session with tag and body (also its
// message id).
func (s *fakeSession) delivery(tag uint64, body string, redelivered bool) *broker.Delivery {
	return &broker.Delivery{Delivery: amqp.Delivery{
		Acknowledger: s, DeliveryTag: tag, Body: []byte(body), MessageId: body,
		RoutingKey: "rk", Exchange: "ex", Redelivered: redelivered,
	}}
}

// deliver hands the actor a delivery, as the session's goroutine does.
func (s *fakeSession) deliver(tag uint64, body string, redelivered bool) {
	s.cfg.Deliver(s.delivery(tag, body, redelivered))
}

func (s *fakeSession) has(e string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.log {
		if x == e {
			return true
		}
	}
	return false
}

func (s *fakeSession) count(e string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.log {
		if x == e {
			n++
		}
	}
	return n
}

// index is the position of e in the log, -1 if absent.
func (s *fakeSession) index(e string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, x := range s.log {
		if x == e {
			return i
		}
	}
	return -1
}

func (s *fakeSession) late() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lateOps...)
}

func (s *fakeSession) isEnded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// sessions starts fake sessions for a consumer actor and keeps them in
// order.
type sessions struct {
	mu       sync.Mutex
	list     []*fakeSession
	failures []error // the next starts fail with these, in order
	attempts int
	// endOnStart: the next sessions started end (as the broker closing
	// their channel) before start returns, so their sessionEnded reaches
	// the actor before their sessionStarted.
	endOnStart int
	// hold, when set, keeps each start from returning until it is closed
	// (the session delivers meanwhile).
	hold chan struct{}
}

func (ss *sessions) start(ch *amqp.Channel, cfg broker.SessionConfig) (consumerSession, amqp.Queue, error) {
	s, q, err := ss.startNow(ch, cfg)
	if ss.hold != nil {
		<-ss.hold
	}
	return s, q, err
}

func (ss *sessions) startNow(_ *amqp.Channel, cfg broker.SessionConfig) (consumerSession, amqp.Queue, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.attempts++
	if len(ss.failures) > 0 {
		err := ss.failures[0]
		ss.failures = ss.failures[1:]
		return nil, amqp.Queue{}, err
	}
	s := &fakeSession{cfg: cfg}
	ss.list = append(ss.list, s)
	if ss.endOnStart > 0 {
		ss.endOnStart--
		s.end(errors.New("channel closed by the broker"))
	}
	return s, amqp.Queue{Name: cfg.Topology.Queue}, nil
}

func (ss *sessions) starts() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.attempts
}

func (ss *sessions) n() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.list)
}

// await returns the i-th session (from 0) once it started.
func (ss *sessions) await(t *testing.T, i int) *fakeSession {
	t.Helper()
	waitFor(t, fmt.Sprintf("session %d to start", i), func() bool { return ss.n() > i })
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.list[i]
}

// fakeConn stands in for the connection actor: it answers OpenChannel with
// a nil channel (the fake session starter needs none) and holds Publish
// requests until the test finishes them (or finishes them at once when
// autoConfirm is set).
type fakeConn struct {
	mu          sync.Mutex
	autoConfirm bool
	opens       int
	dropOpens   int // the next OpenChannel requests are lost (sent to a dead PID)
	published   []*broker.Request
}

func (f *fakeConn) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *OpenChannel:
		f.mu.Lock()
		f.opens++
		drop := f.dropOpens > 0
		if drop {
			f.dropOpens--
		}
		f.mu.Unlock()
		if !drop {
			ctx.Send(msg.ReplyTo, &ChannelReply{Nonce: msg.Nonce})
		}
	case *Publish:
		f.mu.Lock()
		f.published = append(f.published, msg.Req)
		auto := f.autoConfirm
		f.mu.Unlock()
		if auto {
			msg.Req.Finish(nil)
		}
	case *StatusRequest:
		ctx.Respond(&ConnectionStatus{Connected: true, Generation: 1})
	}
}

// publish returns the i-th publish request (from 0) once it arrived.
func (f *fakeConn) publish(t *testing.T, i int) *broker.Request {
	t.Helper()
	waitFor(t, fmt.Sprintf("publish %d", i), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.published) > i
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.published[i]
}

func (f *fakeConn) publishes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.published)
}

// parent spawns the actor under test and records what it reports, and the
// failures its supervisor strategy saw (it restarts the child).
type parent struct {
	props *actor.Props
	child chan *actor.PID
	rec   *reports
}

type reports struct {
	mu       sync.Mutex
	ready    int
	failed   []*supervisor.ChildFailed
	failures []any // reasons passed to the supervisor strategy
}

func (r *reports) readyCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

func (r *reports) failedReports() []*supervisor.ChildFailed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*supervisor.ChildFailed(nil), r.failed...)
}

func (r *reports) crashes() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.failures...)
}

func (p *parent) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		p.child <- ctx.Spawn(p.props)
	case *supervisor.ChildReady:
		p.rec.mu.Lock()
		p.rec.ready++
		p.rec.mu.Unlock()
	case *supervisor.ChildFailed:
		p.rec.mu.Lock()
		p.rec.failed = append(p.rec.failed, msg)
		p.rec.mu.Unlock()
	}
}

// spawnUnder runs props as the child of a recording parent whose strategy
// restarts it on a crash. It returns the child; the test's cleanup stops
// everything and shuts the actor system down.
func spawnUnder(t *testing.T, sys *actor.ActorSystem, props *actor.Props) (*actor.PID, *reports) {
	t.Helper()
	rec := &reports{}
	strategy := actor.NewOneForOneStrategy(10, time.Minute, func(reason any) actor.Directive {
		rec.mu.Lock()
		rec.failures = append(rec.failures, reason)
		rec.mu.Unlock()
		return actor.RestartDirective
	})
	p := &parent{props: props, child: make(chan *actor.PID, 1), rec: rec}
	ppid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return p },
		actor.WithSupervisor(strategy)))
	t.Cleanup(func() { _ = sys.Root.StopFuture(ppid).Wait() })
	return <-p.child, rec
}

// consumerRig is a consumer actor wired to a fake connection and fake
// sessions.
type consumerRig struct {
	sys      *actor.ActorSystem
	conn     *fakeConn
	connPID  *actor.PID
	sessions *sessions
	pid      *actor.PID
	rep      *reports
	state    *routeState
	events   *eventLog
}

type eventLog struct {
	mu sync.Mutex
	ev []DeliveryEvent
}

func (l *eventLog) add(e DeliveryEvent) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) all() []DeliveryEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]DeliveryEvent(nil), l.ev...)
}

// newConsumer starts a consumer actor for route (Topology.Queue "q" and a
// fast Reopen unless set; Events recorded) and waits for its first session.
func newConsumer(t *testing.T, route *Route, conn *fakeConn) *consumerRig {
	t.Helper()
	r := startConsumer(t, route, conn, nil)
	r.sessions.await(t, 0)
	waitFor(t, "ChildReady", func() bool { return r.rep.readyCount() >= 1 })
	return r
}

// startConsumer starts a consumer actor whose first session starts fail
// with failures.
func startConsumer(t *testing.T, route *Route, conn *fakeConn, failures []error) *consumerRig {
	t.Helper()
	return startConsumerWith(t, route, conn, &sessions{failures: failures})
}

// startConsumerWith starts a consumer actor whose sessions ss starts.
func startConsumerWith(t *testing.T, route *Route, conn *fakeConn, ss *sessions, opts ...func(*ConsumerConfig)) *consumerRig {
	t.Helper()
	if route.Name == "" {
		route.Name = "route"
	}
	if route.Topology.Queue == "" {
		route.Topology.Queue = "q"
	}
	if route.Reopen == (supervisor.Backoff{}) {
		route.Reopen = supervisor.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2}
	}
	events := &eventLog{}
	route.Events = events.add
	sys := newSystem(t)
	connPID := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return conn }))
	t.Cleanup(func() { _ = sys.Root.StopFuture(connPID).Wait() })
	state := newRouteState(0)
	cfg := ConsumerConfig{Route: route, state: state, Connection: connPID, StartSession: ss.start}
	for _, o := range opts {
		o(&cfg)
	}
	pid, rep := spawnUnder(t, sys, ConsumerProps(cfg))
	return &consumerRig{sys: sys, conn: conn, connPID: connPID, sessions: ss, pid: pid, rep: rep, state: state, events: events}
}

// recv receives from ch, failing the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %s waiting to receive", waitLimit)
		panic("unreachable")
	}
}

// waitClosed waits for done to be closed.
func waitClosed(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %s waiting for %s", waitLimit, what)
	}
}

// gate blocks handlers until opened; a failing test opens it on cleanup so
// no handler outlives it.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

func (g *gate) wait() { <-g.ch }

// handlerReturned waits until the handler that got tr returned and its
// result was sent to the actor: the tracker is sealed only after that.
func handlerReturned(t *testing.T, tr *Tracker) {
	t.Helper()
	waitFor(t, "the handler to return", func() bool {
		if tr.Add() {
			tr.Done(nil) // not sealed yet: undo
			return false
		}
		return true
	})
}

// handlers dispatches on the delivery body, so one route can mix outcomes.
type handlers map[string]func(ctx context.Context, d *broker.Delivery) error

func (h handlers) handle(ctx context.Context, d *broker.Delivery) error {
	if f, ok := h[string(d.Body)]; ok {
		return f(ctx, d)
	}
	return nil
}

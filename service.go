package hato

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/supervisor"
)

// Hook is a lifecycle hook (see OnStart, OnStarted, OnStop).
type Hook func(ctx context.Context) error

// Service is a named service instance: its routes, its publishing, its
// actors. Create it with New, register routes with Subscribe, then Run it,
// or Start and Stop it when embedding.
type Service struct {
	name string
	uuid string
	cfg  config
	log  *zap.Logger
	tel  *telemetry
	ops  *opsState
	// watchdog watches the routes' progress (see liveness.go); made by
	// spawn, stopped by teardown.
	watchdog *actors.Watchdog
	// protoWarn makes the protobuf-in-JSON publish warning once.
	protoWarn sync.Once

	mu        sync.Mutex
	routes    []*route
	regErr    error
	onStart   []Hook
	onStarted []Hook
	onStop    []Hook
	state     state
	system    *actor.ActorSystem
	ownSystem bool
	root      *actor.PID
	conn      atomic.Pointer[actor.PID] // the connection actor, once spawned
	done      chan struct{}
	fatal     error
	fatalOnce sync.Once
	failed    chan struct{} // closed on a fatal runtime failure
	stopOnce  sync.Once
	stopErr   error
	doneOnce  sync.Once

	// A Start in progress: Stop sets stopReq, cancels its ctx and waits for
	// startDone; Start then tears down what it started itself, so only
	// one of them ever shuts the actors down.
	cancelStart  context.CancelFunc
	startDone    chan struct{} // closed when Start returns; nil before Start
	stopReq      bool
	spawning     bool // Start got past its OnStart hooks
	teardownOnce sync.Once

	// gate orders publishes before the connection's drain: Publish holds
	// it shared while it hands a request to the connection actor; Stop
	// takes it exclusively to close publishing.
	gate        sync.RWMutex
	pubClosed   bool
	outstanding sync.Map             // *broker.Request → struct{}: publishes without an outcome
	direct      actors.DirectPublish // the connection actor's publishing channel, for hand

	dedupe dedupeCounters // see DedupeStats
}

type state int

const (
	stateNew state = iota
	stateStarting
	stateRunning
	stateStopping
	stateStopped
)

// New creates a service named name. Options are validated here; the
// returned error wraps ErrInvalidOption.
func New(name string, opts ...Option) (*Service, error) {
	if name == "" {
		return nil, invalid("empty service name")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if o == nil {
			return nil, invalid("nil option")
		}
		if err := o.applyService(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.uuid == "" {
		cfg.uuid = envelope.NewUUID4()
	}
	cfg.pauses = newPauseBook() // outage
	if err := cfg.resolveURL(); err != nil {
		return nil, err
	}
	if cfg.connectionName == "" {
		short := cfg.uuid
		if len(short) > 8 {
			short = short[:8]
		}
		cfg.connectionName = name + "-" + short
	}
	s := &Service{
		name:   name,
		uuid:   cfg.uuid,
		cfg:    cfg,
		log:    cfg.logger.With(zap.String("service", name), zap.String("service_uuid", cfg.uuid)),
		done:   make(chan struct{}),
		failed: make(chan struct{}),
	}
	s.tel = newTelemetry(&s.cfg, s.log, s.runningStatus)
	if err := s.setupOps(); err != nil {
		return nil, err
	}
	s.addComponents()
	return s, nil
}

// resolveURL picks the connection URLs: WithURL(s), else the parts
// options, else AMQP_URL (comma-separated URLs), else tomodachi's defaults.
// WithTLS alone does not pass over AMQP_URL: it configures the TLS of the
// URLs found there. With WithTLS, every URL must be amqps://: an amqp://
// one would connect in plaintext despite it.
func (c *config) resolveURL() error {
	switch {
	case c.urlSet:
	case c.partsSet:
		return c.buildURLs(c.tlsSet)
	case os.Getenv("AMQP_URL") != "":
		if err := c.envURLs(os.Getenv("AMQP_URL")); err != nil {
			return err
		}
	default:
		return c.buildURLs(c.tlsSet)
	}
	return c.checkTLSSchemes()
}

// envURLs takes the URLs of AMQP_URL.
func (c *config) envURLs(u string) error {
	c.urls = broker.SplitURLs(u)
	for _, one := range c.urls {
		if err := checkURL(one); err != nil {
			return fmt.Errorf("AMQP_URL: %w", err)
		}
	}
	c.url = strings.Join(c.urls, ",")
	return nil
}

// checkTLSSchemes refuses WithTLS with an amqp:// URL.
func (c *config) checkTLSSchemes() error {
	if !c.tlsSet {
		return nil
	}
	for _, one := range c.urls {
		if uri, err := amqp.ParseURI(one); err == nil && uri.Scheme != "amqps" {
			return invalid("WithTLS with the plaintext URL %q: use amqps://", redactURL(one))
		}
	}
	return nil
}

// buildURLs makes one URL per host of WithHost ("h1,h2:5673"), with the
// port of WithPort where a host has none.
func (c *config) buildURLs(tlsOn bool) error {
	c.urls = nil
	for _, h := range strings.Split(c.host, ",") {
		host, port := strings.TrimSpace(h), c.port
		if hh, p, err := net.SplitHostPort(host); err == nil {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || n > 65535 {
				return invalid("host %q: bad port", host)
			}
			host, port = hh, n
		}
		c.urls = append(c.urls, broker.BuildURL(tlsOn, host, port, c.login, c.password, c.vhost))
	}
	c.url = strings.Join(c.urls, ",")
	return nil
}

// Name is the service name.
func (s *Service) Name() string { return s.name }

// UUID is the service instance's uuid.
func (s *Service) UUID() string { return s.uuid }

// Logger is the service's logger.
func (s *Service) Logger() *zap.Logger { return s.log }

// ActorSystem is the actor system the service runs in (nil before Start).
func (s *Service) ActorSystem() *actor.ActorSystem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.system
}

// OnStart adds a hook run by Start before connecting (tomodachi's
// _start_service). An error aborts Start.
func (s *Service) OnStart(h Hook) { s.addHook(&s.onStart, h) }

// OnStarted adds a hook run once every route consumes (tomodachi's
// _started_service). An error stops the service.
func (s *Service) OnStarted(h Hook) { s.addHook(&s.onStarted, h) }

// OnStop adds a hook run by Stop after the routes drained and before
// publishing closes, so it may still publish (tomodachi's _stop_service).
func (s *Service) OnStop(h Hook) { s.addHook(&s.onStop, h) }

func (s *Service) addHook(list *[]Hook, h Hook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h != nil {
		*list = append(*list, h)
	}
}

func (s *Service) register(r *route, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		err = fmt.Errorf("%w: subscribe after start", ErrAlreadyStarted)
	}
	if err == nil && r != nil {
		err = s.validateRoute(r)
	}
	if err != nil {
		if s.regErr == nil {
			s.regErr = err
		}
		return err
	}
	r.name = fmt.Sprintf("route-%d-%s", len(s.routes), r.cfg.handlerName)
	s.routes = append(s.routes, r)
	s.warnRoute(r)
	return nil
}

// RouteInfo describes a registered route.
type RouteInfo struct {
	// Name is the route's actor name under the root supervisor.
	Name       string
	RoutingKey string
	Exchange   string
	Queue      string
	BindingKey string
	// DeadLetterQueue is empty when the route has none.
	DeadLetterQueue string
	// Actor is the route's consumer actor (nil before Start). Its PID stays
	// the same across restarts.
	Actor *actor.PID
}

// Routes describes the registered routes.
func (s *Service) Routes() []RouteInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RouteInfo, 0, len(s.routes))
	for _, r := range s.routes {
		t := s.topology(r)
		info := RouteInfo{Name: r.name, RoutingKey: r.cfg.routingKey, Exchange: t.ExchangeName(),
			Queue: t.Queue, BindingKey: t.BindingKey, DeadLetterQueue: t.DeadLetterQueue}
		if s.root != nil {
			info.Actor = actor.NewPID(s.root.Address, s.root.Id+"/"+r.name)
		}
		out = append(out, info)
	}
	return out
}

func (s *Service) topology(r *route) broker.Topology {
	rc := r.cfg
	t := broker.Topology{
		Exchange:   rc.exchange,
		BindingKey: broker.BindingKey(s.cfg.routingKeyPrefix, rc.routingKey),
		Queue:      rc.queue,
		QueueTTL:   s.cfg.queueTTL,
		QueueType:  rc.queueType,
	}
	if t.Exchange == "" {
		t.Exchange = s.cfg.exchange
	}
	if !rc.competing {
		t.MaxConsumers = 1
	}
	p := s.failurePolicy(r)
	if p.DeadLetterQueue != "" {
		t.DeadLetterQueue = p.DeadLetterQueue
	}
	t.RetryDelays = p.RetryDelays // outage: the delay queues
	return t
}

func (s *Service) failurePolicy(r *route) actors.FailurePolicy {
	p := s.cfg.failure
	if r.cfg.failure != nil {
		p = *r.cfg.failure
	}
	dl := s.cfg.deadLetter
	if r.cfg.deadLetter != nil {
		dl = *r.cfg.deadLetter
	}
	if !dl {
		p.DeadLetterQueue = ""
	} else if p.DeadLetterQueue == "" {
		p.DeadLetterQueue = s.deadLetterQueueOf(r.cfg)
	}
	return p.WithDefaults()
}

// deliveryEvents adapts the WithDeliveryEvents callback for the consumer
// actors; nil when there is none.
func (s *Service) deliveryEvents() func(actors.DeliveryEvent) {
	fn := s.cfg.onDeliveryEvent
	return func(e actors.DeliveryEvent) {
		s.tel.deliveryEvent(e)
		if fn != nil {
			fn(e)
		}
	}
}

// Start connects, declares every route's topology and starts consuming. It
// returns once the broker connection is up and every route consumes, or
// with an error when ctx ends first or the broker refuses something
// permanently (credentials, a conflicting queue declaration); everything
// started is stopped again then. Start may be called once. Stop may be
// called while Start runs, from another goroutine: it cancels the start
// (the ctx OnStart hooks get ends), and Start returns ErrStopped.
//
// When parent has no deadline, the start timeout (WithStartTimeout,
// default 60 s) bounds Start as it bounds Run: a service without a logger
// would otherwise wait silently for an unreachable broker. The error then
// says what the last connection attempt met. A nil parent is an error
// matching ErrInvalidArgument.
func (s *Service) Start(parent context.Context) error {
	if parent == nil {
		return fmt.Errorf("%w: Start with a nil context", ErrInvalidArgument)
	}
	if _, ok := parent.Deadline(); !ok {
		var cancel context.CancelFunc
		parent, cancel = context.WithTimeout(parent, s.cfg.startTimeout)
		defer cancel()
	}
	ctx, hooks, err := s.beginStart(parent)
	if err != nil {
		return err
	}
	defer s.endStart()
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			return s.abortStart(fmt.Errorf("hato: on-start hook: %w", err))
		}
	}
	if err := s.beginSpawn(ctx); err != nil {
		return s.abortStart(err)
	}
	if err := s.startOps(); err != nil {
		return s.abortStart(err)
	}
	if err := s.spawn(); err != nil {
		return s.abortStart(err)
	}
	if err := s.awaitReady(ctx); err != nil {
		return s.abortStart(err)
	}
	hooks, err = s.markRunning()
	if err != nil {
		return s.abortStart(err)
	}
	s.log.Info("service started", zap.Int("routes", len(s.routes)))
	for _, h := range hooks {
		if err := h(parent); err != nil {
			err = fmt.Errorf("hato: on-started hook: %w", err)
			s.fail(err)
			return err
		}
	}
	return nil
}

// beginStart moves a new service to starting; the returned ctx is
// cancelled by a Stop while starting, or when Start returns.
func (s *Service) beginStart(ctx context.Context) (context.Context, []Hook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.state == stateStopped && s.startDone == nil:
		return nil, nil, ErrStopped // stopped before it was started
	case s.state != stateNew:
		return nil, nil, ErrAlreadyStarted
	case s.regErr != nil:
		return nil, nil, s.regErr
	}
	s.state = stateStarting
	ctx, s.cancelStart = context.WithCancel(ctx)
	s.startDone = make(chan struct{})
	return ctx, append([]Hook(nil), s.onStart...), nil
}

// beginSpawn lets Start spawn its actors, unless it was cancelled.
func (s *Service) beginSpawn(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReq {
		return ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hato: start: %w", err)
	}
	s.spawning = true
	return nil
}

func (s *Service) endStart() {
	s.cancelStart()
	close(s.startDone)
}

// awaitReady waits until every child of the root supervisor is ready.
func (s *Service) awaitReady(ctx context.Context) error {
	ready := make(chan error, 1)
	s.system.Root.Send(s.root, &supervisor.AwaitReady{Done: ready})
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		return s.startTimedOut(ctx.Err())
	}
}

// markRunning ends a successful start, unless Stop asked to cancel it.
func (s *Service) markRunning() ([]Hook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopReq {
		return nil, ErrStopped
	}
	s.state = stateRunning
	return append([]Hook(nil), s.onStarted...), nil
}

// abortStart tears down whatever Start started and marks the service
// stopped. It returns ErrStopped when a Stop cancelled the start, else err.
func (s *Service) abortStart(err error) error {
	s.mu.Lock()
	stopped := s.stopReq
	s.mu.Unlock()
	if stopped {
		err = ErrStopped
	} else {
		// The caller gets err; a stack trace of Start's internals adds
		// nothing to it.
		s.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Error("start failed", zap.Error(err))
	}
	s.shutdownActors()
	s.finishStopped()
	return err
}

// spawn creates the actor system (unless embedded) and the root supervisor
// with the connection actor and one consumer actor per route.
func (s *Service) spawn() error {
	sys := s.cfg.system
	if sys == nil {
		core := s.log.Core()
		sys = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return slog.New(protoactorHandler{zapslog.NewHandler(core, zapslog.WithName("protoactor"))})
		}))
		s.ownSystem = true
	}
	s.system = sys
	rootName := fmt.Sprintf("hato-%s-%s", s.name, s.uuid)
	rootID := rootName
	connPID := actor.NewPID(sys.Address(), rootID+"/connection")

	children := []supervisor.ChildSpec{{
		Name:   "connection",
		Props:  s.connectionProps(),
		Policy: supervisor.Policy{MaxRestarts: -1},
	}}
	s.newWatchdog()
	for _, r := range s.routes {
		children = append(children, s.routeChild(r, connPID))
	}
	props := supervisor.Props(supervisor.Config{
		Children: children,
		Logger:   s.log.Named("supervisor"),
		OnEvent:  s.onEvent,
	})
	root, err := sys.Root.SpawnNamed(props, rootName)
	if err != nil {
		// abortStart shuts an owned system down.
		return fmt.Errorf("hato: spawn root supervisor: %w", err)
	}
	s.mu.Lock()
	s.root = root
	s.mu.Unlock()
	s.conn.Store(connPID)
	s.watchdog.Start(sys, connPID)
	return nil
}

// routeChild is the supervisor's child spec of r's consumer actor.
func (s *Service) routeChild(r *route, connPID *actor.PID) supervisor.ChildSpec {
	policy := s.cfg.supervision
	if r.cfg.supervision != nil {
		policy = *r.cfg.supervision
	}
	prefetch, global := s.cfg.prefetch, s.cfg.globalPrefetch
	if r.cfg.prefetch > 0 {
		prefetch, global = r.cfg.prefetch, r.cfg.globalPrefetch
	}
	ar := &actors.Route{
		Name:           r.name,
		Topology:       s.topology(r),
		Prefetch:       prefetch,
		GlobalPrefetch: global,
		Concurrency:    r.cfg.concurrency,
		HandlerTimeout: s.cfg.handlerTimeout,
		StrictOrder:    s.cfg.strictOrder,
		Handle:         s.routeHandler(r),
		Failure:        s.failurePolicy(r),
		Logger:         s.log,
		LogFields:      []zap.Field{zap.String("route", r.name), zap.String("routing_key", r.cfg.routingKey)},
		Service:        s.name,
		Reopen:         s.cfg.reconnect,
		Events:         s.deliveryEvents(),
		Breaker:        s.breakerOf(r),     // outage
		BreakerEvents:  s.cfg.pauses.event, // outage
	}
	if r.cfg.handlerTimeout != nil {
		ar.HandlerTimeout = *r.cfg.handlerTimeout
	}
	if r.cfg.strictOrder != nil {
		ar.StrictOrder = *r.cfg.strictOrder
	}
	return supervisor.ChildSpec{
		Name: r.name,
		Props: actors.ConsumerProps(actors.ConsumerConfig{Route: ar, Connection: connPID, Direct: &s.direct, StartSession: s.sessionStarter(),
			Liveness: s.watchdog.Route(r.name, ar.Topology)}),
		Policy: policy,
	}
}

// routeHandler is r's delivery handler, traced and measured.
func (s *Service) routeHandler(r *route) func(context.Context, *broker.Delivery) error {
	rt := newRouteTelemetry(s.topology(r).ExchangeName(), r.cfg)
	s.tel.nameRoute(r.name, rt)
	return s.tel.consumer(rt, r.handle(s))
}

// shuffled is a shuffled copy of urls: the instances of a service spread
// over the nodes of a cluster.
func shuffled(urls []string) []string {
	out := slices.Clone(urls)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (s *Service) dialConfig(kind string) broker.Config {
	return broker.Config{
		URL:            s.cfg.urls[0],
		DialTimeout:    s.cfg.dialTimeout,
		TLS:            s.cfg.tls,
		Heartbeat:      s.cfg.heartbeat,
		ConnectionName: s.cfg.connectionName + "-" + kind,
	}
}

// onEvent runs on the root supervisor's goroutine.
func (s *Service) onEvent(e supervisor.Event) {
	s.trackEvent(e)
	if s.cfg.onSupervisorEvent != nil {
		s.cfg.onSupervisorEvent(e)
	}
	if e.Kind == supervisor.EventGaveUp && !s.cfg.keepRunningOnRouteFailure {
		s.mu.Lock()
		running := s.state == stateRunning
		s.mu.Unlock()
		if running {
			s.fail(fmt.Errorf("%w: %s: %w", ErrRouteFailed, e.Child, e.Reason))
		}
	}
}

// fail records a fatal runtime failure; Run stops the service on it.
func (s *Service) fail(err error) {
	s.fatalOnce.Do(func() {
		s.mu.Lock()
		s.fatal = err
		s.mu.Unlock()
		s.log.Error("fatal failure, the service must stop", zap.Error(err))
		close(s.failed)
	})
}

// ConnectionStatus is the state of the service's broker connections (see
// Service.Status): Connected, Generation (incremented on every successful
// (re)connection), Blocked (by the broker's flow control), Buffered and
// Outstanding publishes, FailedAttempts and LastError (why it is not
// connected), PublishNode and ConsumeNode (the broker nodes), and Paused
// (the routes paused by their circuit breaker).
type ConnectionStatus = actors.ConnectionStatus

// Status asks the connection actor for its state: connected, blocked by
// the broker's flow control, publishes buffered while disconnected or
// awaiting their confirm. For health checks; ErrNotStarted before Start.
func (s *Service) Status(ctx context.Context) (ConnectionStatus, error) {
	if ctx == nil {
		return ConnectionStatus{}, fmt.Errorf("%w: Status with a nil context", ErrInvalidArgument)
	}
	s.mu.Lock()
	state := s.state
	s.mu.Unlock()
	if state == stateStopped {
		return ConnectionStatus{}, ErrStopped
	}
	conn := s.conn.Load()
	if conn == nil {
		return ConnectionStatus{}, ErrNotStarted
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res, err := s.system.Root.RequestFuture(conn, &actors.StatusRequest{}, timeout).Result()
	if err != nil {
		return ConnectionStatus{}, fmt.Errorf("hato: status: %w", err)
	}
	st, ok := res.(*actors.ConnectionStatus)
	if !ok {
		return ConnectionStatus{}, fmt.Errorf("hato: status: unexpected reply %T", res)
	}
	return ConnectionStatus{
		Connected:      st.Connected,
		Generation:     st.Generation,
		Blocked:        st.Blocked,
		Buffered:       st.Buffered,
		Outstanding:    st.Outstanding,
		FailedAttempts: st.FailedAttempts,
		LastError:      st.LastError,
		PublishNode:    st.PublishNode,
		ConsumeNode:    st.ConsumeNode,
		Paused:         s.PausedRoutes(), // outage
	}, nil
}

// Failed is closed when the service hit a fatal runtime failure (see Err).
// Run stops the service then; an embedding program should call Stop.
func (s *Service) Failed() <-chan struct{} { return s.failed }

// Done is closed once the service has stopped.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err returns the fatal runtime failure, if any.
func (s *Service) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

// Stop stops the service gracefully: routes stop taking deliveries, handlers
// in flight get until the drain timeout (or ctx's deadline, if sooner) to
// finish, the rest goes back to the broker; OnStop hooks run; outstanding
// publishes are confirmed; then the connections close and the actors stop.
// It is idempotent: later calls wait for the first and return its result.
// Called while Start runs, it cancels the start and waits for Start to
// have stopped what it started.
//
// A nil ctx is an error matching ErrInvalidArgument; nothing is stopped.
func (s *Service) Stop(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("%w: Stop with a nil context", ErrInvalidArgument)
	}
	s.mu.Lock()
	st := s.state
	if st == stateNew {
		s.state = stateStopped
		s.mu.Unlock()
		s.doneOnce.Do(func() { close(s.done) })
		return nil
	}
	s.mu.Unlock()
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	select {
	case <-s.done:
		return s.stopErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) stop(ctx context.Context) error {
	if err := s.cancelStarting(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	if s.state != stateRunning {
		// Start failed or was cancelled: it stopped what it started.
		s.mu.Unlock()
		return nil
	}
	s.state = stateStopping
	hooks := append([]Hook(nil), s.onStop...)
	routeNames := make([]string, len(s.routes))
	for i, r := range s.routes {
		routeNames[i] = r.name
	}
	s.mu.Unlock()
	s.log.Info("stopping: draining routes")

	deadline := time.Now().Add(s.cfg.drainTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var errs []error
	if err := s.waitDrain(ctx, routeNames, deadline); err != nil {
		errs = append(errs, err)
	}
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			errs = append(errs, fmt.Errorf("hato: on-stop hook: %w", err))
		}
	}
	s.gate.Lock()
	s.pubClosed = true
	s.gate.Unlock()
	if err := s.waitDrain(ctx, []string{"connection"}, deadline); err != nil {
		errs = append(errs, err)
	}
	s.shutdownActors()
	s.finishStopped()
	s.log.Info("service stopped")
	return errors.Join(errs...)
}

// cancelStarting cancels a Start in progress. While Start runs its OnStart
// hooks nothing is spawned, nor will be: the service is stopped at once (so
// an OnStart hook may call Stop). Later it waits until Start returned,
// having shut down what it started.
func (s *Service) cancelStarting(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateStarting {
		s.mu.Unlock()
		return nil
	}
	s.stopReq = true
	cancel, started, spawning := s.cancelStart, s.startDone, s.spawning
	s.mu.Unlock()
	cancel()
	if !spawning {
		s.finishStopped()
		return nil
	}
	select {
	case <-started:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hato: stop: Start still running: %w", ctx.Err())
	}
}

// waitDrain drains the named children. It returns an error wrapping
// ErrDrainIncomplete when one of them could not finish by the deadline.
func (s *Service) waitDrain(ctx context.Context, names []string, deadline time.Time) error {
	done := make(chan struct{})
	var mu sync.Mutex
	var unfinished []string
	s.system.Root.Send(s.root, &supervisor.DrainChildren{
		Names: names, Deadline: deadline, Done: done,
		Unfinished: func(child string, n int) {
			mu.Lock()
			unfinished = append(unfinished, fmt.Sprintf("%s: %d", child, n))
			mu.Unlock()
		},
	})
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrDrainIncomplete, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(unfinished) > 0 {
		return fmt.Errorf("%w: unfinished at the deadline (returned to the broker, or unconfirmed): %v", ErrDrainIncomplete, unfinished)
	}
	return nil
}

// shutdownActors stops the root supervisor (and so every actor) and settles
// any publish that never got an outcome, once: a second call waits for the
// first.
func (s *Service) shutdownActors() { s.teardownOnce.Do(s.teardown) }

func (s *Service) teardown() {
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	s.gate.Lock()
	s.pubClosed = true
	s.gate.Unlock()
	if s.root != nil {
		if err := s.system.Root.StopFuture(s.root).Wait(); err != nil {
			s.log.Warn("stopping the root supervisor timed out", zap.Error(err))
		}
	}
	s.outstanding.Range(func(k, _ any) bool {
		k.(*broker.Request).Finish(ErrStopped)
		return true
	})
	if s.ownSystem {
		s.system.Shutdown()
	}
}

func (s *Service) finishStopped() {
	s.stopOps()
	s.mu.Lock()
	s.state = stateStopped
	s.mu.Unlock()
	s.gate.Lock()
	s.pubClosed = true
	s.gate.Unlock()
	s.doneOnce.Do(func() { close(s.done) })
}

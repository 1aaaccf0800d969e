package hato

import (
	"context"
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

	// mu guards the registration fields, the lifecycle's data below and
	// every change of st (see lifecycle.go).
	mu        sync.Mutex
	routes    []*route
	regErr    error
	onStart   []Hook
	onStarted []Hook
	onStop    []Hook
	system    *actor.ActorSystem
	ownSystem bool
	root      *actor.PID
	conn      atomic.Pointer[actor.PID] // the connection actor, once spawned

	// The lifecycle (lifecycle.go). st is a state, changed only by
	// transition under mu; atomic so that hand reads it without mu.
	st          atomic.Int32
	cancelStart context.CancelFunc // ends Start's ctx; nil until Start is called
	done        chan struct{}      // closed on entering stopped
	failed      chan struct{}      // closed on entering failed
	fatal       error              // why it failed
	stopErr     error              // the result of the Stop that stopped it

	// gate orders publishes before the connection's drain: hand holds it
	// shared while it checks the state and hands a request to the
	// connection actor; transition takes it exclusively to enter a state
	// that closes publishing.
	gate        sync.RWMutex
	outstanding sync.Map             // *broker.Request → struct{}: publishes without an outcome
	direct      actors.DirectPublish // the connection actor's publishing channel, for hand

	dedupe dedupeCounters // see DedupeStats
}

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
	if s.current() != stateNew {
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
		// Publish, Status and a start's diagnosis send to the connection
		// actor once it is spawned (see supervisor.Config.Spawned).
		Spawned: func() { s.conn.Store(connPID) },
	})
	root, err := sys.Root.SpawnNamed(props, rootName)
	if err != nil {
		// abortStart shuts an owned system down.
		return fmt.Errorf("hato: spawn root supervisor: %w", err)
	}
	s.mu.Lock()
	s.root = root
	s.mu.Unlock()
	s.watchdog.Start(sys, connPID) // its first status request comes an interval later
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
	if s.current() == stateStopped {
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
	out := *st
	out.Paused = s.PausedRoutes() // outage
	return out, nil
}

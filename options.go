package hato

// The options of New, Subscribe and Service.Publish, by where they apply:
//
//   - options.go (this file): the Option, RouteOption and PublishOption
//     interfaces, the defaults, and the resolved configurations they fill
//     (config, routeConfig);
//   - options_connection.go: service options about the broker connection
//     (URLs, host and credentials, TLS, heartbeat, reconnection, publish
//     buffer, channels per connection, message size, connection name);
//   - options_service.go: the other service-only options (uuid, queue
//     names and TTL, logger, actor system, middleware, timeouts, events);
//   - options_route.go: route-only options (NotCompeting, QueueName,
//     Concurrency, Validator, QuorumQueue, ...);
//   - options_shared.go: options that are both a service option (the
//     default of every route, or of every publish) and a route or publish
//     option (Exchange, Envelope, Prefetch, HandlerTimeout, StrictOrder,
//     FailureHandling, Supervision, NoDeadLetterQueue, ...);
//   - with their features: Breaker (breaker.go), Dedupe (dedupe.go), the
//     liveness options (liveness.go), WithTracerProvider, WithMeterProvider
//     and WithPropagator (telemetry.go), WithOpsServer (ops.go),
//     WithComponent (component.go), and the publish-only options
//     (publish.go).
//
// Options follow the naming rule in the package documentation (doc.go,
// "Options").

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/transport"
)

// Option configures a Service (see New).
type Option interface {
	applyService(*config) error
}

// RouteOption configures a route (see Subscribe).
type RouteOption interface {
	applyRoute(*routeConfig) error
}

// PublishOption configures one publish (see Service.Publish).
type PublishOption interface {
	applyPublish(*publishConfig) error
}

// Defaults, as tomodachi's options.amqp, plus hato's own.
const (
	DefaultHost           = "127.0.0.1"
	DefaultPort           = 5672
	DefaultLogin          = "guest"
	DefaultPassword       = "guest"
	DefaultVirtualHost    = "/"
	DefaultHeartbeat      = 60 * time.Second
	DefaultQueueTTL       = 86400 * time.Second
	DefaultPrefetch       = 100
	DefaultGlobalPrefetch = 400
	DefaultDrainTimeout   = 30 * time.Second
	DefaultStartTimeout   = 60 * time.Second
	DefaultPublishBuffer  = 10000
	DefaultActorTimeout   = 30 * time.Second
	// DefaultHandlerTimeout is the handler deadline (see HandlerTimeout):
	// with the default three attempts and their backoff, a delivery stays
	// unacked about 15 minutes at most, half of RabbitMQ's default
	// consumer_timeout (30 minutes).
	DefaultHandlerTimeout = 5 * time.Minute
	// DefaultMaxMessageSize is RabbitMQ's default max_message_size
	// (128 MiB, since 3.8).
	DefaultMaxMessageSize = 128 << 20
)

// config is a Service's resolved configuration.
type config struct {
	uuid string

	url                       string   // every broker URL, comma-separated (for messages: redact it)
	urls                      []string // the broker URLs, one per node
	urlSet                    bool
	dialTimeout               time.Duration
	host                      string
	port                      int
	login, password, vhost    string
	partsSet                  bool
	tls                       *tls.Config
	tlsSet                    bool
	heartbeat                 time.Duration
	exchange                  string
	routingKeyPrefix          string
	queueNamePrefix           string
	queueTTL                  time.Duration
	prefetch, globalPrefetch  int
	envelope                  envelope.Envelope
	logger                    *zap.Logger
	loggerSet                 bool
	system                    *actor.ActorSystem
	middleware                []Middleware
	supervision               RestartPolicy
	failure                   FailurePolicy
	reconnect                 Backoff
	publishBuffer             int
	channelsPerConnection     int
	maxMessageSize            int
	drainTimeout              time.Duration
	startTimeout              time.Duration
	handlerTimeout            time.Duration
	strictOrder               bool
	onSupervisorEvent         func(SupervisorEvent)
	onDeliveryEvent           func(DeliveryEvent)
	deadLetter                bool
	keepRunningOnRouteFailure bool
	connectionName            string
	dedupe                    *DedupeOption
	transport                 transport.Transport // nil: the AMQP broker
	tracerProvider            trace.TracerProvider
	meterProvider             metric.MeterProvider
	propagator                propagation.TextMapPropagator
	opsAddr                   string
	breaker                   *BreakerPolicy // outage: Breaker as a service option
	pauses                    *pauseBook     // outage: the routes' breakers (breaker.go)
	components                []Component    // see WithComponent
	liveness                  actors.LivenessConfig
	sessionStarter            transport.SessionStarter // tests only: wraps how sessions start
}

func defaultConfig() config {
	return config{
		host:           DefaultHost,
		port:           DefaultPort,
		login:          DefaultLogin,
		password:       DefaultPassword,
		vhost:          DefaultVirtualHost,
		heartbeat:      DefaultHeartbeat,
		exchange:       "amq.topic",
		queueTTL:       DefaultQueueTTL,
		prefetch:       DefaultPrefetch,
		globalPrefetch: DefaultGlobalPrefetch,
		envelope:       envelope.JSON,
		logger:         zap.NewNop(),
		publishBuffer:  DefaultPublishBuffer,
		maxMessageSize: DefaultMaxMessageSize,
		drainTimeout:   DefaultDrainTimeout,
		startTimeout:   DefaultStartTimeout,
		handlerTimeout: DefaultHandlerTimeout,
		deadLetter:     true,
	}
}

type serviceOption func(*config) error

func (f serviceOption) applyService(c *config) error { return f(c) }

// routeConfig is a route's resolved configuration.
type routeConfig struct {
	routingKey     string
	queue          string // resolved once at registration
	exchange       string
	competing      bool
	queueName      string
	handlerName    string
	concurrency    int
	prefetch       int
	globalPrefetch int
	envelope       envelope.Envelope
	envOpts        envelope.Options
	failure        *FailurePolicy
	supervision    *RestartPolicy
	deadLetter     *bool
	queueType      broker.QueueType
	actorTimeout   time.Duration
	handlerTimeout *time.Duration // nil: the service's
	strictOrder    *bool          // nil: the service's
	dedupe         *DedupeOption
	breaker        *BreakerPolicy // outage: Breaker as a route option
}

type routeOption func(*routeConfig) error

func (f routeOption) applyRoute(r *routeConfig) error { return f(r) }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
}

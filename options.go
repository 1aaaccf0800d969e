package hato

// Options follow the naming rule in the package documentation (doc.go,
// "Options").

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
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

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOption, fmt.Sprintf(format, args...))
}

// WithUUID sets the service instance's uuid (random by default). It names
// non-competing queues and prefixes message uuids.
func WithUUID(uuid string) Option {
	return serviceOption(func(c *config) error {
		if uuid == "" {
			return invalid("empty uuid")
		}
		c.uuid = uuid
		return nil
	})
}

// WithURL sets the broker URL (amqp:// or amqps://, credentials and vhost
// included), or several, separated by commas, for the nodes of a cluster
// (see WithURLs). Without it, the host/port/credential options or, when none
// of those is given, the AMQP_URL environment variable (which may list
// several URLs the same way), or tomodachi's defaults
// (amqp://guest:guest@127.0.0.1:5672/) apply.
func WithURL(url string) Option {
	return WithURLs(broker.SplitURLs(url)...)
}

// WithURLs sets the URLs of the broker nodes (a cluster), each with its own
// credentials and vhost if need be. The service connects to one of them,
// chosen at random at Start; when a dial fails or the connection is lost it
// tries the next one, with the reconnect backoff and a dial timeout per
// address (WithDialTimeout). Both connections (publishing and consuming) go
// to the same node; Status says which. Every URL is redacted in errors and
// logs.
func WithURLs(urls ...string) Option {
	return serviceOption(func(c *config) error {
		if len(urls) == 0 {
			return invalid("no URL")
		}
		for _, u := range urls {
			if err := checkURL(u); err != nil {
				return err
			}
		}
		c.urls, c.urlSet = slices.Clone(urls), true
		c.url = strings.Join(urls, ",")
		return nil
	})
}

// checkURL refuses a URL that does not parse or whose port is out of
// range (amqp091-go accepts 99999, and the dial is then retried until the
// start timeout).
func checkURL(u string) error {
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return invalid("URL %q does not parse", redactURL(u))
	}
	if uri.Port <= 0 || uri.Port > 65535 {
		return invalid("URL %q: port %d out of range", redactURL(u), uri.Port)
	}
	return nil
}

// WithDialTimeout bounds one connection attempt to one address: the TCP
// connect, TLS and AMQP handshakes together (default 30 s). With several
// URLs, a shorter one moves on from an unreachable node sooner.
func WithDialTimeout(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("dial timeout %s not positive", d)
		}
		c.dialTimeout = d
		return nil
	})
}

// WithHost sets the broker host (default 127.0.0.1), or several, separated
// by commas, for the nodes of a cluster: each may carry its own port
// ("rabbit-1:5672,rabbit-2:5673"); WithPort is the port of those that do
// not. Login, password, vhost and TLS are the same for all.
func WithHost(host string) Option {
	return serviceOption(func(c *config) error {
		for _, h := range strings.Split(host, ",") {
			if strings.TrimSpace(h) == "" {
				return invalid("empty host")
			}
		}
		c.host, c.partsSet = host, true
		return nil
	})
}

// WithPort sets the broker port (default 5672).
func WithPort(port int) Option {
	return serviceOption(func(c *config) error {
		if port <= 0 || port > 65535 {
			return invalid("port %d out of range", port)
		}
		c.port, c.partsSet = port, true
		return nil
	})
}

// WithCredentials sets login and password (default guest/guest).
func WithCredentials(login, password string) Option {
	return serviceOption(func(c *config) error {
		c.login, c.password, c.partsSet = login, password, true
		return nil
	})
}

// WithVirtualHost sets the virtual host (default "/").
func WithVirtualHost(vhost string) Option {
	return serviceOption(func(c *config) error {
		if vhost == "" {
			return invalid("empty virtual host")
		}
		c.vhost, c.partsSet = vhost, true
		return nil
	})
}

// WithTLS turns TLS on (amqps) with cfg; nil means verify the server
// against the system roots. Certificate verification is on unless cfg says
// otherwise. cfg is never modified: each dial uses a clone whose ServerName
// is the dialed URL's host, unless cfg sets ServerName.
//
// WithTLS applies to the URLs of WithURL(s) or AMQP_URL, which must all be
// amqps:// (New fails on an amqp:// one rather than connect in
// plaintext), and to the URLs built from WithHost and WithPort (amqps;
// set WithPort(5671) for RabbitMQ's default TLS port).
func WithTLS(cfg *tls.Config) Option {
	return serviceOption(func(c *config) error {
		c.tls, c.tlsSet = cfg, true
		return nil
	})
}

// WithHeartbeat sets the AMQP heartbeat interval (default 60 s, as
// tomodachi): a dead peer is detected after about two intervals.
func WithHeartbeat(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d < time.Second {
			return invalid("heartbeat %s below 1s", d)
		}
		c.heartbeat = d
		return nil
	})
}

// WithQueueNamePrefix prefixes every queue name (default none).
func WithQueueNamePrefix(prefix string) Option {
	return serviceOption(func(c *config) error {
		c.queueNamePrefix = prefix
		return nil
	})
}

// WithQueueTTL sets the queues' x-expires (default 24 h, as tomodachi);
// zero declares queues without it. It must match what other nodes sharing
// the queues declare, or the broker refuses the declaration.
func WithQueueTTL(ttl time.Duration) Option {
	return serviceOption(func(c *config) error {
		if ttl < 0 || ttl > 0 && ttl < time.Millisecond {
			return invalid("queue TTL %s", ttl)
		}
		c.queueTTL = ttl
		return nil
	})
}

// WithLogger sets the service's logger (default: none for a library
// service; Run uses a production logger when none was set). Proto.Actor's
// own logs are routed to it too.
func WithLogger(l *zap.Logger) Option {
	return serviceOption(func(c *config) error {
		if l == nil {
			return invalid("nil logger")
		}
		c.logger, c.loggerSet = l, true
		return nil
	})
}

// WithActorSystem embeds the service in an existing actor system: its root
// supervisor is spawned there and the system is not shut down by Stop.
func WithActorSystem(sys *actor.ActorSystem) Option {
	return serviceOption(func(c *config) error {
		if sys == nil {
			return invalid("nil actor system")
		}
		c.system = sys
		return nil
	})
}

// WithMiddleware appends message middleware; the first is the outermost.
func WithMiddleware(mw ...Middleware) Option {
	return serviceOption(func(c *config) error {
		for _, m := range mw {
			if m == nil {
				return invalid("nil middleware")
			}
		}
		c.middleware = append(c.middleware, mw...)
		return nil
	})
}

// WithReconnectBackoff paces reconnection after a connection loss (default
// 100 ms doubling to 30 s with 20 % jitter).
func WithReconnectBackoff(b Backoff) Option {
	return serviceOption(func(c *config) error {
		if err := b.check(); err != nil {
			return err
		}
		c.reconnect = b
		return nil
	})
}

// WithPublishBuffer bounds publishes waiting for the broker (buffered while
// disconnected or awaiting confirms); beyond it Publish fails with
// ErrBufferFull. Default 10,000.
func WithPublishBuffer(n int) Option {
	return serviceOption(func(c *config) error {
		if n <= 0 {
			return invalid("publish buffer %d", n)
		}
		c.publishBuffer = n
		return nil
	})
}

// WithChannelsPerConnection caps the consumer channels (one a route, one
// for each dead-letter queue declaration while it runs) of one consuming
// connection. Consumer channels spread over as many consuming connections
// as they need, "<prefix>-sub", "<prefix>-sub-2", …, all to one node;
// losing any of them reconnects them all. Default 0: the broker's
// channel_max (RabbitMQ: 2047), i.e. the fewest connections. A lower cap
// spreads the routes over more connections, each with its own socket and
// broker processes, and a lost connection then takes fewer channels down
// with it (they all reconnect all the same). At most 65535.
func WithChannelsPerConnection(n int) Option {
	return serviceOption(func(c *config) error {
		if n < 0 || n > 65535 {
			return invalid("channels per connection %d", n)
		}
		c.channelsPerConnection = n
		return nil
	})
}

// WithMaxMessageSize bounds the body of a published message, after
// envelope encoding, in bytes: Publish fails at once with
// ErrMessageTooLarge for a larger one, before anything is sent. Default
// DefaultMaxMessageSize, RabbitMQ's default max_message_size; set it to the
// broker's limit if that is lower (the broker refuses a larger message by
// closing the publish channel, see docs/failure-handling.md, Bad input).
func WithMaxMessageSize(n int) Option {
	return serviceOption(func(c *config) error {
		if n <= 0 {
			return invalid("max message size %d", n)
		}
		c.maxMessageSize = n
		return nil
	})
}

// WithDrainTimeout bounds how long Stop lets handlers in flight finish
// (default 30 s); what is unfinished then goes back to the broker.
func WithDrainTimeout(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("drain timeout %s", d)
		}
		c.drainTimeout = d
		return nil
	})
}

// WithStartTimeout bounds how long Run waits for the broker and every route
// at start (default 60 s), and Start when its context has no deadline.
func WithStartTimeout(d time.Duration) Option {
	return serviceOption(func(c *config) error {
		if d <= 0 {
			return invalid("start timeout %s", d)
		}
		c.startTimeout = d
		return nil
	})
}

// WithSupervisorEvents receives every SupervisorEvent (ready, unavailable,
// failed, restarted, stopped, respawned, gave-up) of the service's
// connection and routes. fn runs on the root supervisor's goroutine and must
// not block.
func WithSupervisorEvents(fn func(SupervisorEvent)) Option {
	return serviceOption(func(c *config) error {
		c.onSupervisorEvent = fn
		return nil
	})
}

// WithDeliveryEvents receives one event for every message dead-lettered
// (once the dead-letter queue confirmed it) or dropped on purpose, and one
// (ActionRequeue) whenever a failed message went back to its queue because
// its dead-letter queue refused the copy even after being declared again,
// and one (ActionDuplicate) for every message Dedupe acked unhandled. fn is
// called from hato's goroutines, possibly concurrently: it must be safe for
// concurrent use and must not block.
func WithDeliveryEvents(fn func(DeliveryEvent)) Option {
	return serviceOption(func(c *config) error {
		c.onDeliveryEvent = fn
		return nil
	})
}

// WithKeepRunningOnRouteFailure keeps the service running when a route
// gives up (exhausts its restart budget or cannot declare its queue). By
// default such a failure stops the service with an error, so Run exits
// non-zero and the process supervisor restarts it.
func WithKeepRunningOnRouteFailure() Option {
	return serviceOption(func(c *config) error {
		c.keepRunningOnRouteFailure = true
		return nil
	})
}

// WithConnectionName sets the prefix of the AMQP connection names
// ("<prefix>-pub", "<prefix>-sub", and "<prefix>-sub-2", … when the routes
// need more consuming connections: see WithChannelsPerConnection). Default
// "<service name>-<uuid prefix>".
func WithConnectionName(prefix string) Option {
	return serviceOption(func(c *config) error {
		if prefix == "" {
			return invalid("empty connection name")
		}
		c.connectionName = prefix
		return nil
	})
}

// Options shared by services, routes and publishes.

// ExchangeOption is the option Exchange returns. It implements Option,
// RouteOption and PublishOption.
type ExchangeOption string

// Exchange sets the exchange: the service default (amq.topic), a route's
// exchange (declared as a durable topic exchange unless it is amq.topic),
// or a publish's.
func Exchange(name string) ExchangeOption { return ExchangeOption(name) }

func (o ExchangeOption) applyService(c *config) error {
	if o == "" {
		return invalid("empty exchange")
	}
	c.exchange = string(o)
	return nil
}
func (o ExchangeOption) applyRoute(r *routeConfig) error     { r.exchange = string(o); return nil }
func (o ExchangeOption) applyPublish(p *publishConfig) error { p.exchange = string(o); return nil }

// RoutingKeyPrefixOption is the option RoutingKeyPrefix returns. It
// implements Option and PublishOption.
type RoutingKeyPrefixOption string

// RoutingKeyPrefix sets the routing-key prefix: the service default, or a
// publish's override (empty means none for that publish).
func RoutingKeyPrefix(prefix string) RoutingKeyPrefixOption { return RoutingKeyPrefixOption(prefix) }

func (o RoutingKeyPrefixOption) applyService(c *config) error {
	c.routingKeyPrefix = string(o)
	return nil
}
func (o RoutingKeyPrefixOption) applyPublish(p *publishConfig) error {
	prefix := string(o)
	p.prefix = &prefix
	return nil
}

// EnvelopeOption is the option Envelope returns. It implements Option,
// RouteOption and PublishOption.
type EnvelopeOption struct{ e envelope.Envelope }

// Envelope selects the message envelope: the service default (JSON, as
// tomodachi's JsonBase), a route's, or a publish's. envelope.Raw sends and
// receives bodies as they are.
func Envelope(e envelope.Envelope) EnvelopeOption { return EnvelopeOption{e} }

func (o EnvelopeOption) applyService(c *config) error {
	if o.e == nil {
		return invalid("nil envelope")
	}
	c.envelope = o.e
	return nil
}
func (o EnvelopeOption) applyRoute(r *routeConfig) error {
	if o.e == nil {
		return invalid("nil envelope")
	}
	r.envelope = o.e
	return nil
}
func (o EnvelopeOption) applyPublish(p *publishConfig) error {
	if o.e == nil {
		return invalid("nil envelope")
	}
	p.envelope = o.e
	return nil
}

// PrefetchOption is the option Prefetch returns. It implements Option and
// RouteOption.
type PrefetchOption struct{ perConsumer, global int }

// Prefetch sets the QoS: per consumer (default 100) and per channel
// (default 400), for the service's routes or one route.
func Prefetch(perConsumer, global int) PrefetchOption { return PrefetchOption{perConsumer, global} }

func (o PrefetchOption) check() error {
	if o.perConsumer <= 0 || o.perConsumer > 65535 || o.global < 0 || o.global > 65535 {
		return invalid("prefetch %d/%d", o.perConsumer, o.global)
	}
	return nil
}
func (o PrefetchOption) applyService(c *config) error {
	if err := o.check(); err != nil {
		return err
	}
	c.prefetch, c.globalPrefetch = o.perConsumer, o.global
	return nil
}
func (o PrefetchOption) applyRoute(r *routeConfig) error {
	if err := o.check(); err != nil {
		return err
	}
	r.prefetch, r.globalPrefetch = o.perConsumer, o.global
	return nil
}

// HandlerTimeoutOption is the option HandlerTimeout returns. It implements
// Option and RouteOption.
type HandlerTimeoutOption time.Duration

// HandlerTimeout is the deadline of one handler run (default
// DefaultHandlerTimeout, 5 minutes), for the service's routes or one route:
// the handler's context is cancelled then, and an error the handler returns
// after it (usually ctx.Err()) is a *HandlerTimeoutError, a failed attempt:
// retried up to FailurePolicy.MaxAttempts, then dead-lettered. Zero means no
// deadline; a negative value is invalid.
//
// Keep it well below RabbitMQ's consumer_timeout (30 minutes by default):
// the broker closes the channel of a delivery unacked that long, and every
// delivery the channel held comes back. A handler must honour its context
// for the deadline to end it; one that ignores it keeps its slot until it
// returns, and each such channel close counts against its message
// (FailurePolicy.MaxRedeliveries).
func HandlerTimeout(d time.Duration) HandlerTimeoutOption { return HandlerTimeoutOption(d) }

func (o HandlerTimeoutOption) applyService(c *config) error {
	if o < 0 {
		return invalid("handler timeout %s", time.Duration(o))
	}
	c.handlerTimeout = time.Duration(o)
	return nil
}

func (o HandlerTimeoutOption) applyRoute(r *routeConfig) error {
	if o < 0 {
		return invalid("handler timeout %s", time.Duration(o))
	}
	d := time.Duration(o)
	r.handlerTimeout = &d
	return nil
}

// StrictOrderOption is the option StrictOrder returns. It implements
// Option and RouteOption.
type StrictOrderOption struct{}

// StrictOrder makes a delivery keep its Concurrency slot until the
// publishes its handler made are confirmed, for the service's routes or one
// route. Without it, the next delivery's handler runs as soon as the
// previous handler returned, while its publishes await their confirms (as a
// hand-written forwarder pipelines); with Concurrency 1 order then holds
// across handler errors and retries, but a delivery whose publish fails
// after its handler returned runs again after the deliveries that started
// meanwhile. With StrictOrder and Concurrency 1, the next delivery runs
// only once the previous one is acked or dead-lettered, so order holds
// across failed publishes too; it costs one confirm round trip per
// delivery.
func StrictOrder() StrictOrderOption { return StrictOrderOption{} }

func (StrictOrderOption) applyService(c *config) error { c.strictOrder = true; return nil }
func (StrictOrderOption) applyRoute(r *routeConfig) error {
	v := true
	r.strictOrder = &v
	return nil
}

// FailureHandlingOption is the option FailureHandling returns. It
// implements Option and RouteOption.
type FailureHandlingOption struct{ p FailurePolicy }

// FailureHandling sets the failure policy: in-process retries with
// backoff, the redelivery limit for poison messages, and the dead-letter
// queue, for the service's routes or one route.
func FailureHandling(p FailurePolicy) FailureHandlingOption { return FailureHandlingOption{p} }

func (o FailureHandlingOption) applyService(c *config) error {
	if err := o.p.check(); err != nil {
		return err
	}
	if err := checkRetryDelays(o.p.RetryDelays); err != nil { // outage
		return err
	}
	c.failure = o.p
	return nil
}
func (o FailureHandlingOption) applyRoute(r *routeConfig) error {
	if err := o.p.check(); err != nil {
		return err
	}
	if err := checkRetryDelays(o.p.RetryDelays); err != nil { // outage
		return err
	}
	p := o.p
	r.failure = &p
	return nil
}

// SupervisionOption is the option Supervision returns. It implements
// Option and RouteOption.
type SupervisionOption struct{ p RestartPolicy }

// Supervision sets how a crashed route actor is restarted (backoff, quiet
// period, restart budget): for every route of the service, or one route.
func Supervision(p RestartPolicy) SupervisionOption { return SupervisionOption{p} }

func (o SupervisionOption) applyService(c *config) error {
	if err := o.p.check(); err != nil {
		return err
	}
	c.supervision = o.p
	return nil
}
func (o SupervisionOption) applyRoute(r *routeConfig) error {
	if err := o.p.check(); err != nil {
		return err
	}
	p := o.p
	r.supervision = &p
	return nil
}

// NoDeadLetterQueueOption is the option NoDeadLetterQueue returns. It
// implements Option and RouteOption.
type NoDeadLetterQueueOption struct{}

// NoDeadLetterQueue stops declaring "<queue>.dlq" queues: a message that
// fails for good is then rejected without requeue (dropped by the broker
// unless a broker policy dead-letters it). For the service or one route.
func NoDeadLetterQueue() NoDeadLetterQueueOption { return NoDeadLetterQueueOption{} }

func (NoDeadLetterQueueOption) applyService(c *config) error { c.deadLetter = false; return nil }
func (NoDeadLetterQueueOption) applyRoute(r *routeConfig) error {
	v := false
	r.deadLetter = &v
	return nil
}

// The shared options implement every interface their docs name.
var (
	_ interface {
		Option
		RouteOption
		PublishOption
	} = ExchangeOption("")
	_ interface {
		Option
		PublishOption
	} = RoutingKeyPrefixOption("")
	_ interface {
		Option
		RouteOption
		PublishOption
	} = EnvelopeOption{}
	_ interface {
		Option
		RouteOption
	} = PrefetchOption{}
	_ interface {
		Option
		RouteOption
	} = FailureHandlingOption{}
	_ interface {
		Option
		RouteOption
	} = SupervisionOption{}
	_ interface {
		Option
		RouteOption
	} = NoDeadLetterQueueOption{}
	_ interface {
		Option
		RouteOption
	} = DedupeOption{}
	_ interface {
		Option
		RouteOption
	} = HandlerTimeoutOption(0)
)

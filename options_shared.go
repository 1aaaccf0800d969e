package hato

// Options that are both a service option and a route (or publish) option:
// given to New they are the default of every route (or publish), given to
// Subscribe or Service.Publish they apply to that one. See options.go for
// where the other options live.

import (
	"time"

	"github.com/hato-go/hato/envelope"
)

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
	if err := checkFailurePolicy(o.p); err != nil {
		return err
	}
	if err := checkRetryDelays(o.p.RetryDelays); err != nil { // outage
		return err
	}
	c.failure = o.p
	return nil
}
func (o FailureHandlingOption) applyRoute(r *routeConfig) error {
	if err := checkFailurePolicy(o.p); err != nil {
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
	if err := checkRestartPolicy(o.p); err != nil {
		return err
	}
	c.supervision = o.p
	return nil
}
func (o SupervisionOption) applyRoute(r *routeConfig) error {
	if err := checkRestartPolicy(o.p); err != nil {
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

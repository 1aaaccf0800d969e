package hato

// Route-only options (see Subscribe). Options that are also service
// options are in options_shared.go; see options.go for where the others
// live.

import (
	"fmt"
	"time"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// NotCompeting gives the route a queue of its own per service instance and
// handler, so every instance gets every message (tomodachi's
// competing=False). Routes compete by default.
func NotCompeting() RouteOption {
	return routeOption(func(r *routeConfig) error { r.competing = false; return nil })
}

// QueueName sets a fixed queue name (the queue-name prefix still applies;
// no hashing). It implies competing.
func QueueName(name string) RouteOption {
	return routeOption(func(r *routeConfig) error {
		if name == "" {
			return invalid("empty queue name")
		}
		r.queueName = name
		r.competing = true
		return nil
	})
}

// HandlerName names the handler: it goes into non-competing queue names
// (tomodachi uses the method's name) and logs. Default: the Go function's
// name.
func HandlerName(name string) RouteOption {
	return routeOption(func(r *routeConfig) error {
		if name == "" {
			return invalid("empty handler name")
		}
		r.handlerName = name
		return nil
	})
}

// Concurrency sets how many messages the route handles at once (default 1,
// which keeps order). The prefetch bounds how many it holds.
//
// The bound holds always. A message keeps its slot until it is settled:
// while the publishes its handler made await their broker confirms, and
// while it waits for an in-process retry. So with 1 the next message waits
// for it: order holds across retries, those after a failed publish too,
// at the cost of one confirm round trip per message (raise Concurrency to
// pipeline, giving up order). A restarted route (after a handler panic, a respawn) cancels
// the context of its handlers still running and runs no new handler until
// every one of them returned: a handler that ignores its context is waited
// for, never overlapped, and hato logs a warning every 5 s while it waits.
// Handlers should honour ctx so a restart is not held up.
func Concurrency(n int) RouteOption {
	return routeOption(func(r *routeConfig) error {
		if n <= 0 {
			return invalid("concurrency %d", n)
		}
		r.concurrency = n
		return nil
	})
}

// EnvelopeOptions passes options to the route's envelope on every parse
// (tomodachi's decorator keyword arguments).
func EnvelopeOptions(opts envelope.Options) RouteOption {
	return routeOption(func(r *routeConfig) error { r.envOpts = opts; return nil })
}

// Validator runs fn on every decoded payload of the route; an error
// dead-letters the message as invalid. For a route of Handler[T], fn
// receives a *T (the address of Message.Data), not a T; for T = any, the
// decoded value; for a protobuf route, the proto.Message. ValidatorOf is
// the typed form.
func Validator(fn func(payload any) error) RouteOption {
	return routeOption(func(r *routeConfig) error { r.envOpts.Validator = fn; return nil })
}

// ValidatorOf is Validator with fn typed for a route of Handler[T]: fn gets
// the decoded payload as a *T. A payload of another type (a route whose T
// differs) fails validation with an error naming both types.
func ValidatorOf[T any](fn func(payload *T) error) RouteOption {
	return Validator(func(payload any) error {
		switch p := payload.(type) {
		case *T:
			return fn(p)
		case T:
			return fn(&p)
		}
		var zero T
		return fmt.Errorf("hato: ValidatorOf[%T] got a %T payload", zero, payload)
	})
}

// QuorumQueue declares the route's queue (and dead-letter queue) as a
// quorum queue, whose delivery count is a backstop against poison messages
// that crash the whole process (see FailurePolicy.MaxRedeliveries). The
// declaration differs from tomodachi's: use it only for queues hato owns
// alone.
func QuorumQueue() RouteOption {
	return routeOption(func(r *routeConfig) error { r.queueType = broker.Quorum; return nil })
}

// ActorTimeout bounds how long an actor route waits for the actor's reply
// (default 30 s); a timeout counts as a handler error.
func ActorTimeout(d time.Duration) RouteOption {
	return routeOption(func(r *routeConfig) error {
		if d <= 0 {
			return invalid("actor timeout %s", d)
		}
		r.actorTimeout = d
		return nil
	})
}

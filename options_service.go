package hato

// Service-only options, apart from the connection's (options_connection.go)
// and those of features with a file of their own. See options.go for where
// the other options live.

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"
)

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

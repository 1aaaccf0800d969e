package hato

// Service options about the broker connection. See options.go for where
// the other options live.

import (
	"crypto/tls"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

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

// WithReconnectBackoff paces reconnection after a connection loss (default
// 100 ms doubling to 30 s with 20 % jitter).
func WithReconnectBackoff(b Backoff) Option {
	return serviceOption(func(c *config) error {
		if err := checkBackoff(b); err != nil {
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

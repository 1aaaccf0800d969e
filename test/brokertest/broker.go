package brokertest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/internal/netproxy"
)

// DefaultURL is the broker used when HATO_TEST_AMQP_URL is not set.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// EnvURL is the environment variable that overrides DefaultURL.
const EnvURL = "HATO_TEST_AMQP_URL"

// DialTimeout bounds TCP connect plus AMQP handshake for Require and Dial.
const DialTimeout = 5 * time.Second

// Hint is appended to every "broker unavailable" failure.
const Hint = "run `scripts/rabbitmq.sh ensure` (or set " + EnvURL + " to a reachable RabbitMQ >= 3.10)"

// BaseURL returns the AMQP URL of the test broker: $HATO_TEST_AMQP_URL or
// DefaultURL.
func BaseURL() string {
	if u := strings.TrimSpace(os.Getenv(EnvURL)); u != "" {
		return u
	}
	return DefaultURL
}

// VhostURL returns BaseURL with its virtual host replaced by vhost (escaped,
// so "a/b" becomes ".../a%2Fb").
func VhostURL(vhost string) (string, error) {
	u, err := url.Parse(BaseURL())
	if err != nil {
		return "", fmt.Errorf("brokertest: invalid %s: %w", EnvURL, err)
	}
	u.Path = "/" + vhost
	u.RawPath = "/" + url.PathEscape(vhost)
	return u.String(), nil
}

// Redact returns rawURL with its password masked, for log and error messages.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// brokerUser is the user name from BaseURL (granted permissions on new vhosts).
func brokerUser() string {
	uri, err := amqp.ParseURI(BaseURL())
	if err != nil || uri.Username == "" {
		return "guest"
	}
	return uri.Username
}

// brokerHostPort is host:port of BaseURL (used to name the lock file).
func brokerHostPort() string {
	uri, err := amqp.ParseURI(BaseURL())
	if err != nil {
		return "127.0.0.1:5672"
	}
	return net.JoinHostPort(uri.Host, fmt.Sprint(uri.Port))
}

var brokerChecked atomic.Bool

// dialConfig is the amqp091 configuration used by Ping and Dial. Properties
// must be complete (amqp091 only fills in defaults when they are empty).
func dialConfig(connectionName string) amqp.Config {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(connectionName)
	return amqp.Config{Dial: amqp.DefaultDial(DialTimeout), Properties: props}
}

// Ping opens and closes one AMQP connection to rawURL within DialTimeout.
func Ping(rawURL string) error {
	conn, err := amqp.DialConfig(rawURL, dialConfig("hato-brokertest-ping"))
	if err != nil {
		return err
	}
	return conn.Close()
}

// Require fails the test unless the broker at BaseURL accepts an AMQP
// connection within DialTimeout. Once one check succeeded in a process,
// later calls return immediately.
func Require(t testing.TB) {
	t.Helper()
	acquireShared()
	if brokerChecked.Load() {
		return
	}
	if err := Ping(BaseURL()); err != nil {
		t.Fatalf("RabbitMQ not reachable at %s: %v; %s", Redact(BaseURL()), err, Hint)
	}
	brokerChecked.Store(true)
}

// Dial opens an AMQP connection to rawURL whose client-provided name
// (visible as Connection.Name in ListConnections and in the management UI)
// is connectionName. The connection is closed in t.Cleanup if still open.
// Failure to connect fails the test.
func Dial(t testing.TB, rawURL, connectionName string) *amqp.Connection {
	t.Helper()
	return DialWith(t, rawURL, connectionName, amqp.Config{})
}

// DialWith is Dial with a custom amqp091 configuration (e.g. a short
// Heartbeat for network-fault tests). Empty Properties and Dial are filled
// in (DialTimeout); connection_name is always set to connectionName.
func DialWith(t testing.TB, rawURL, connectionName string, cfg amqp.Config) *amqp.Connection {
	t.Helper()
	acquireShared()
	def := dialConfig(connectionName)
	if cfg.Dial == nil {
		cfg.Dial = def.Dial
	}
	if len(cfg.Properties) == 0 {
		cfg.Properties = def.Properties
	} else {
		props := amqp.Table{}
		for k, v := range cfg.Properties {
			props[k] = v
		}
		for k, v := range def.Properties {
			if _, ok := props[k]; !ok {
				props[k] = v
			}
		}
		props.SetClientConnectionName(connectionName)
		cfg.Properties = props
	}
	conn, err := amqp.DialConfig(rawURL, cfg)
	if err != nil {
		t.Fatalf("dial %s as %q: %v; %s", Redact(rawURL), connectionName, err, Hint)
	}
	t.Cleanup(func() {
		if !conn.IsClosed() {
			_ = conn.Close()
		}
	})
	return conn
}

// WithAddr returns rawURL pointing at addr ("host:port") instead, for
// connecting through a proxy (see package netproxy).
func WithAddr(rawURL, addr string) (string, error) {
	u, err := amqp.ParseURI(rawURL)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	u.Host = host
	if u.Port, err = strconv.Atoi(port); err != nil {
		return "", err
	}
	return u.String(), nil
}

// Addr returns the "host:port" rawURL connects to.
func Addr(rawURL string) (string, error) {
	u, err := amqp.ParseURI(rawURL)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port)), nil
}

// Proxy starts a netproxy in front of the broker rawURL points at and
// returns it with rawURL rewritten to go through it; t.Cleanup closes it.
func Proxy(t testing.TB, rawURL string) (*netproxy.Proxy, string) {
	t.Helper()
	target, err := Addr(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := netproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	url, err := WithAddr(rawURL, proxy.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return proxy, url
}

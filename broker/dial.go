package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker/internal/rawamqp"
)

// Config says how to open one AMQP connection.
type Config struct {
	// URL is an amqp:// or amqps:// URI, credentials included. It never
	// appears in errors or logs as given: see Redact.
	URL string
	// TLS configures amqps connections. Nil verifies the server certificate
	// against the system roots with the URL's host as server name. Dial
	// never writes to it: each dial uses a clone whose ServerName is the
	// URL's host unless TLS.ServerName is set.
	TLS *tls.Config
	// Heartbeat is the interval of AMQP heartbeats, which detect a dead peer.
	// Zero means DefaultHeartbeat.
	Heartbeat time.Duration
	// ConnectionName is advertised as the client property connection_name,
	// shown by the management UI and rabbitmqctl.
	ConnectionName string
	// DialTimeout bounds the TCP connect, TLS and AMQP handshakes together.
	// Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// ChannelMax caps the channels of the connection: the handshake
	// negotiates the lower of it and the broker's channel_max. Zero means
	// the broker's. Opening a channel beyond it fails with
	// amqp.ErrChannelMax.
	ChannelMax uint16
}

// Defaults for Config.
const (
	DefaultHeartbeat   = 60 * time.Second
	DefaultDialTimeout = 30 * time.Second
)

// Dial opens a connection. It honours ctx for the whole handshake, not only
// on entry. amqp091-go's own automatic recovery is never enabled: the
// connection actor owns reconnection.
func Dial(ctx context.Context, cfg Config) (*amqp.Connection, error) {
	uri, err := amqp.ParseURI(cfg.URL)
	if err != nil {
		// url.Parse errors quote the whole URL, password included: do not
		// wrap them.
		return nil, fmt.Errorf("%w: %s: %s", ErrInvalidURL, Redact(cfg.URL), scrubURLError(err))
	}
	heartbeat := cfg.Heartbeat
	if heartbeat <= 0 {
		heartbeat = DefaultHeartbeat
	}
	var h handshake
	acfg := amqpConfig(cfg, uri, heartbeat, h.dialer(ctx, dialDeadline(ctx, cfg.DialTimeout)))
	dialURL := cfg.URL
	if uri.Scheme == "amqps" {
		// TLS is done by the dialer, below the frame guard (see
		// guardedTLS), so amqp091-go gets a plain amqp:// URL.
		if dialURL, err = plainURL(cfg.URL, uri); err != nil {
			return nil, fmt.Errorf("%w: %s: %s", ErrInvalidURL, Redact(cfg.URL), scrubURLError(err))
		}
		// tlsFor made a copy with the URL's host as ServerName.
		h.tls, acfg.TLSClientConfig = acfg.TLSClientConfig, nil
	}

	// Abort a handshake in progress when ctx ends.
	stop := context.AfterFunc(ctx, func() {
		h.with(func(c net.Conn) { _ = c.SetDeadline(time.Unix(1, 0)) })
	})
	conn, err := amqp.DialConfig(dialURL, acfg)
	if !stop() {
		// ctx ended during the dial; whatever came back is unusable.
		if conn != nil {
			_ = conn.Close()
		}
		return nil, fmt.Errorf("%w: dial %s: %w", ErrDial, Redact(cfg.URL), ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDial, classifyDial(Redact(cfg.URL), err))
	}
	// amqp091-go clears the handshake deadline and sets a read deadline
	// again only when the next frame arrives: if the network dies right
	// after the handshake, nothing would ever notice. Arm the read deadline
	// now (three heartbeats, amqp091-go's own rule); every frame re-arms it.
	h.with(func(c net.Conn) { _ = c.SetReadDeadline(time.Now().Add(3 * heartbeat)) })
	h.guard.SetFrameMax(uint32(conn.Config.FrameSize))
	return conn, nil
}

// dialDeadline bounds the whole dial: the dial timeout (DefaultDialTimeout
// when zero), or ctx's deadline when that comes first.
func dialDeadline(ctx context.Context, timeout time.Duration) time.Time {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}

// amqpConfig is the amqp091-go configuration of a dial.
func amqpConfig(cfg Config, uri amqp.URI, heartbeat time.Duration, dial func(network, addr string) (net.Conn, error)) amqp.Config {
	props := amqp.NewConnectionProperties()
	if cfg.ConnectionName != "" {
		props.SetClientConnectionName(cfg.ConnectionName)
	}
	props["product"] = "hato"
	acfg := amqp.Config{
		Heartbeat:       heartbeat,
		TLSClientConfig: tlsFor(cfg.TLS, uri),
		Properties:      props,
		Locale:          "en_US",
		Dial:            dial,
		ChannelMax:      cfg.ChannelMax,
	}
	return acfg
}

// tlsFor is the TLS configuration of one dial to uri: a clone of cfg (never
// cfg itself, which amqp091-go would write its ServerName into, so that a
// second dial, to another node or by another service sharing cfg, verified
// the first host's name) with ServerName set to uri's host unless cfg sets
// one. Nil for amqp:// without cfg.
func tlsFor(cfg *tls.Config, uri amqp.URI) *tls.Config {
	if cfg == nil {
		if uri.Scheme != "amqps" {
			return nil
		}
		return &tls.Config{ServerName: uri.Host, MinVersion: tls.VersionTLS12}
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = uri.Host
	}
	return c
}

// handshake holds the network connection of a dial, so that ctx can abort
// the handshake and Dial can arm the read deadline afterwards.
type handshake struct {
	mu    sync.Mutex
	conn  net.Conn
	tls   *tls.Config   // amqps: the dialer's TLS, nil for amqp
	guard *rawamqp.Conn // what amqp091-go reads from
}

// dialer dials the network connection, bounding the TLS and AMQP handshakes
// by deadline (amqp091-go clears it once the connection is open). The
// connection amqp091-go gets is wrapped in a frame guard (rawamqp.Conn):
// a content header amqp091-go's parser would refuse, which would cost the
// whole connection, reaches it rewritten, with the unreadable part as bytes
// in a header (see HeaderUnparseable). For amqps the guard sits above TLS,
// on the plain frames.
func (h *handshake) dialer(ctx context.Context, deadline time.Time) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := c.SetDeadline(deadline); err != nil {
			_ = c.Close()
			return nil, err
		}
		if h.tls != nil {
			tc := tls.Client(c, h.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tc
		}
		g := rawamqp.NewConn(c)
		h.mu.Lock()
		h.conn, h.guard = c, g
		h.mu.Unlock()
		return g, nil
	}
}

// plainURL is rawURL (an amqps URL, parsed as uri) as an amqp URL with its
// port spelled out, for amqp091-go when the dialer does the TLS.
func plainURL(rawURL string, uri amqp.URI) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	u.Scheme = "amqp"
	u.Host = net.JoinHostPort(uri.Host, fmt.Sprint(uri.Port))
	return u.String(), nil
}

// with calls f with the network connection, if one was dialed.
func (h *handshake) with(f func(net.Conn)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		f(h.conn)
	}
}

// BuildURL assembles an AMQP URL from parts, escaping each as needed.
// vhost "/" is the default virtual host.
func BuildURL(tlsOn bool, host string, port int, login, password, vhost string) string {
	scheme := "amqp"
	if tlsOn {
		scheme = "amqps"
	}
	u := url.URL{
		Scheme: scheme,
		User:   url.UserPassword(login, password),
		Host:   net.JoinHostPort(host, fmt.Sprint(port)),
	}
	if vhost != "" && vhost != "/" {
		u.Path = "/" + vhost
		u.RawPath = "/" + url.PathEscape(vhost)
	} else {
		u.Path = "/"
	}
	return u.String()
}

// SplitURLs splits a comma-separated list of AMQP URLs ("amqp://a,amqp://b")
// into its URLs, trimming spaces and dropping empty parts. A comma splits
// only where the next part starts with amqp:// or amqps://, so a comma
// inside a URL (a password, a vhost) never splits it; a trailing comma
// is dropped. A single URL comes
// back as a list of one.
func SplitURLs(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			continue
		}
		rest := strings.TrimLeft(s[i+1:], " \t")
		if rest == "" || strings.HasPrefix(rest, "amqp://") || strings.HasPrefix(rest, "amqps://") {
			out = appendTrimmed(out, s[start:i])
			start = i + 1
		}
	}
	return appendTrimmed(out, s[start:])
}

func appendTrimmed(out []string, part string) []string {
	if part = strings.TrimSpace(part); part != "" {
		out = append(out, part)
	}
	return out
}

// Node names the broker node rawURL points at, for status and logs:
// "host:port", never credentials. A URL that does not parse is redacted
// whole.
func Node(rawURL string) string {
	uri, err := amqp.ParseURI(rawURL)
	if err != nil {
		return Redact(rawURL)
	}
	return net.JoinHostPort(uri.Host, fmt.Sprint(uri.Port))
}

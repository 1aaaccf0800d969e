package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hato-go/hato/internal/testcert"
)

func dialTLS(t *testing.T, host string, port int, cfg *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Config{URL: fmt.Sprintf("amqps://guest:guest@%s:%d/", host, port), TLS: cfg, DialTimeout: 5 * time.Second})
	if conn != nil {
		_ = conn.Close()
	}
	return err
}

// A certificate for "localhost" served on 127.0.0.1: dialing
// amqps://localhost passes TLS (and then fails, the listener is no broker);
// dialing amqps://127.0.0.1 with the same config must refuse the
// certificate. amqp091-go wrote "localhost" into the caller's config on
// the first dial, so the second verified the wrong name and accepted it.
func TestDialVerifiesEachURLsHostAndLeavesTheCallersTLSConfigAlone(t *testing.T) {
	cert := testcert.New(t, "localhost")
	port := testcert.Listen(t, cert, testcert.Hangup)
	cfg := &tls.Config{RootCAs: cert.Roots, MinVersion: tls.VersionTLS12}

	err := dialTLS(t, "localhost", port, cfg)
	if err == nil || errors.Is(err, ErrTLS) {
		t.Fatalf("dial localhost: %v, want a failure after the TLS handshake", err)
	}
	if cfg.ServerName != "" {
		t.Errorf("Dial wrote ServerName %q into the caller's tls.Config", cfg.ServerName)
	}
	err = dialTLS(t, "127.0.0.1", port, cfg)
	if !errors.Is(err, ErrTLS) || !Permanent(err) {
		t.Fatalf("dial 127.0.0.1 with a certificate for localhost: %v, want ErrTLS (permanent)", err)
	}
}

// A ServerName the caller set is kept for every host.
func TestDialKeepsTheCallersServerName(t *testing.T) {
	cert := testcert.New(t, "rabbit.internal")
	port := testcert.Listen(t, cert, testcert.Hangup)
	cfg := &tls.Config{RootCAs: cert.Roots, ServerName: "rabbit.internal", MinVersion: tls.VersionTLS12}
	if err := dialTLS(t, "127.0.0.1", port, cfg); err == nil || errors.Is(err, ErrTLS) {
		t.Fatalf("dial: %v, want a failure after the TLS handshake", err)
	}
}

// TLS failures are permanent: an untrusted certificate, and a TLS
// handshake answered by a plain AMQP listener. Retrying them only delayed
// the error until the start timeout.
func TestDialTLSFailuresArePermanent(t *testing.T) {
	cert := testcert.New(t, "127.0.0.1")
	for name, tc := range map[string]struct {
		port int
		cfg  *tls.Config
	}{
		"untrusted":      {testcert.Listen(t, cert, testcert.Hangup), &tls.Config{MinVersion: tls.VersionTLS12}},
		"plain listener": {testcert.Listen(t, nil, testcert.PlainAMQP), &tls.Config{RootCAs: cert.Roots, MinVersion: tls.VersionTLS12}},
	} {
		t.Run(name, func(t *testing.T) {
			err := dialTLS(t, "127.0.0.1", tc.port, tc.cfg)
			if !errors.Is(err, ErrTLS) || !Permanent(err) {
				t.Fatalf("dial: %v, want ErrTLS (permanent)", err)
			}
		})
	}
	// A listener that hangs up before the handshake is not a TLS failure:
	// a restarting node does that.
	port := testcert.Listen(t, nil, testcert.Hangup)
	if err := dialTLS(t, "127.0.0.1", port, &tls.Config{MinVersion: tls.VersionTLS12}); err == nil || Permanent(err) {
		t.Fatalf("dial a listener that hangs up: %v, want a temporary error", err)
	}
}

//go:build integration

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
)

// brokerURL is the AMQP URL of this package's vhost; it fails the test if
// the broker is unavailable.
func brokerURL(t testing.TB) string {
	t.Helper()
	return pkgVhost.URL(t)
}

// brokerVhost is the name of this package's vhost (see brokerURL).
func brokerVhost(t testing.TB) string {
	t.Helper()
	return pkgVhost.Name(t)
}

// newService makes a service on this package's vhost with test options.
func newService(t *testing.T, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	return testutil.NewService(t, brokerURL(t), name, opts...)
}

// publisher starts a service without routes, for publishing in tests.
func publisher(t *testing.T, opts ...hato.Option) *hato.Service {
	t.Helper()
	return testutil.Publisher(t, brokerURL(t), opts...)
}

// publishN publishes {"id": id} for each of ids (testutil.PublishN).
var publishN = testutil.PublishN

// publishAsync publishes in the background; the returned channel yields
// the first error (or nil) when done.
func publishAsync(p *hato.Service, key string, ids []string, opts ...hato.PublishOption) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, id := range ids {
			if err := p.Publish(ctx, map[string]any{"id": id}, key, opts...); err != nil {
				done <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
		}
		done <- nil
	}()
	return done
}

type payload = testutil.Payload

var idOf = testutil.IDOf

func routeQueue(t *testing.T, s *hato.Service, i int) string {
	t.Helper()
	r := s.Routes()
	if len(r) <= i {
		t.Fatalf("service has %d routes", len(r))
	}
	return r[i].Queue
}

func fmtIDs(prefix string, n int) []string { return testutil.IDs(prefix, n) }

func mustSubscribe[T any](t *testing.T, s *hato.Service, key string, h hato.Handler[T], opts ...hato.RouteOption) {
	t.Helper()
	if err := hato.Subscribe(s, key, h, opts...); err != nil {
		t.Fatal(err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// offlineURL is an address nothing listens on.
const offlineURL = "amqp://guest:guest@127.0.0.1:1/"

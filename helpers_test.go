package hato_test

import (
	"errors"
	"testing"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
)

// offlineURL is an address nothing listens on: services that unit tests
// build but never connect use it, so an accidental connection fails
// instead of reaching the shared test broker.
const offlineURL = "amqp://guest:guest@127.0.0.1:1/"

// offlineService makes a service that is never connected, for tests of
// options and registration.
func offlineService(t *testing.T, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	svc, err := hato.New(name, append(testutil.Options(t, offlineURL), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func mustSubscribe[T any](t *testing.T, s *hato.Service, key string, h hato.Handler[T], opts ...hato.RouteOption) {
	t.Helper()
	if err := hato.Subscribe(s, key, h, opts...); err != nil {
		t.Fatal(err)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

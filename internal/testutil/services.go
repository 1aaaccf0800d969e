package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

// The helpers of the broker scenarios of the root package (the liveness
// tests, which need its export_test.go) and of test/integration; each
// package passes its own vhost's URL.

// Payload is the JSON payload of test messages: {"id": "..."}.
type Payload struct {
	ID string `json:"id"`
}

// IDOf is the id of a test message.
func IDOf(m *hato.Message[Payload]) string { return m.Data.ID }

// NewService makes a service on url with the test options (Options) and
// opts; it does not start it.
func NewService(t testing.TB, url, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	svc, err := hato.New(name, append(Options(t, url), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// Publisher starts a service on url without routes, for publishing.
func Publisher(t testing.TB, url string, opts ...hato.Option) *hato.Service {
	t.Helper()
	p := NewService(t, url, "test-publisher", opts...)
	Start(t, p)
	return p
}

// PublishN publishes {"id": id} for each of ids on key, in order, within
// 30 s in all; any error fails the test.
func PublishN(t testing.TB, p *hato.Service, key string, ids []string, opts ...hato.PublishOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range ids {
		if err := p.Publish(ctx, map[string]any{"id": id}, key, opts...); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
}

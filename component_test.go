//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
)

type fakeComponent struct {
	started  atomic.Pointer[hato.Service]
	stopped  atomic.Bool
	notReady atomic.Pointer[error]
}

func (c *fakeComponent) Start(_ context.Context, s *hato.Service) error {
	c.started.Store(s)
	return nil
}
func (c *fakeComponent) Stop(context.Context) error { c.stopped.Store(true); return nil }
func (c *fakeComponent) Ready() error {
	if p := c.notReady.Load(); p != nil {
		return *p
	}
	return nil
}

// A component starts with the service it runs in, makes it not ready while
// it is not, and stops with it.
func TestComponent(t *testing.T) {
	c := &fakeComponent{}
	svc := newService(t, "component", hato.WithComponent(c))
	testutil.Start(t, svc)
	if c.started.Load() != svc {
		t.Fatal("component not started with its service")
	}
	if err := svc.Ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
	down := errors.New("database unreachable")
	c.notReady.Store(&down)
	if err := svc.Ready(); !errors.Is(err, hato.ErrNotReady) || !errors.Is(err, down) {
		t.Fatalf("ready with the component down: %v", err)
	}
	if err := svc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !c.stopped.Load() {
		t.Fatal("component not stopped")
	}
}

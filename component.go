package hato

import (
	"context"
	"fmt"
)

// Component is something that runs inside a service beside its routes,
// such as an outbox relay (github.com/hato-go/hato/outbox/pgoutbox). See
// WithComponent.
type Component interface {
	// Start starts the component once every route consumes (as an
	// OnStarted hook, with the service that runs it); it must not block
	// beyond starting its goroutines. An error stops the service.
	Start(ctx context.Context, s *Service) error
	// Stop stops it: run as an OnStop hook, after the routes drained and
	// before publishing closes, so it may still publish. It blocks until
	// the component's goroutines ended or ctx ends.
	Stop(ctx context.Context) error
	// Ready returns nil while the component can do its work; an error makes
	// Service.Ready (and /readyz) report the service not ready. It must
	// not block.
	Ready() error
}

// WithComponent runs c inside the service: Start once every route
// consumes, Stop when the service stops, Ready part of Service.Ready. In
// the order given, before the OnStarted and OnStop hooks added with the
// methods.
func WithComponent(c Component) Option {
	return serviceOption(func(cfg *config) error {
		if c == nil {
			return invalid("nil component")
		}
		cfg.components = append(cfg.components, c)
		return nil
	})
}

// addComponents adds the components' hooks to a new service.
func (s *Service) addComponents() {
	for _, c := range s.cfg.components {
		s.onStarted = append(s.onStarted, func(ctx context.Context) error { return c.Start(ctx, s) })
		s.onStop = append(s.onStop, c.Stop)
	}
}

// componentsReady is the first component's readiness error.
func (s *Service) componentsReady() error {
	for _, c := range s.cfg.components {
		if err := c.Ready(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotReady, err)
		}
	}
	return nil
}

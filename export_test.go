package hato

import "github.com/hato-go/hato/internal/transport"

// WithSessionStarter makes the routes start their sessions with start
// (tests only: a test wraps broker.StartSession to break a session
// behind the route's back).
func WithSessionStarter(start transport.SessionStarter) Option {
	return serviceOption(func(c *config) error {
		c.sessionStarter = start
		return nil
	})
}

// LifecycleState is the name of svc's lifecycle state (tests only: a test
// waits for a Stop to have cancelled a Start in progress).
func LifecycleState(svc *Service) string { return svc.current().String() }

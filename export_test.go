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

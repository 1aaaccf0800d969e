package hato

import (
	"context"
)

// HandlerFunc is the untyped form of a handler that middleware wraps. Its
// msg.Data holds the payload already decoded into the route's type.
type HandlerFunc func(ctx context.Context, msg *Message[any]) error

// Middleware wraps message handling, tomodachi's message_middleware: it sees
// the decoded message, can run code before and after next, pass values to
// the handler through ctx, skip the handler (by not calling next) and handle
// or replace its error. The first middleware given is the outermost.
// Changes to msg are not seen by the handler; use ctx.
type Middleware func(next HandlerFunc) HandlerFunc

// chain wraps final in the service's middleware, first outermost.
func (s *Service) chain(final HandlerFunc) HandlerFunc {
	h := final
	for i := len(s.cfg.middleware) - 1; i >= 0; i-- {
		h = s.cfg.middleware[i](h)
	}
	return h
}

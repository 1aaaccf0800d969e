package hato

import (
	"fmt"

	"github.com/hato-go/hato/broker"
)

// invalidArgument is a sentinel of the ErrInvalidArgument family that is
// not the broker's.
type invalidArgument struct{ msg string }

func (e *invalidArgument) Error() string { return e.msg }

// Unwrap returns ErrInvalidArgument.
func (e *invalidArgument) Unwrap() error { return broker.ErrInvalidArgument }

// validateRoute checks what a route will declare against AMQP's limits, in
// the form it is sent: the binding key (prefixed and encoded), the
// exchange, queue and dead-letter queue names.
func (s *Service) validateRoute(r *route) error {
	t := s.topology(r)
	_, err := broker.WireRoutingKey(s.cfg.routingKeyPrefix, r.cfg.routingKey)
	if err == nil {
		err = broker.ValidateName("exchange name", t.ExchangeName())
	}
	if err == nil {
		err = broker.ValidateName("queue name", t.Queue)
	}
	if err == nil && t.DeadLetterQueue != "" {
		err = broker.ValidateName("dead-letter queue name", t.DeadLetterQueue)
	}
	if err != nil {
		return fmt.Errorf("route %q: %w", r.cfg.routingKey, err)
	}
	return nil
}

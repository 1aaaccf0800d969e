package actors

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/transport"
)

// consumerSession is what the consumer actor needs of a consuming session
// (a *broker.Session in production, an in-memory or a fake one in tests).
// Deliveries are settled through each *broker.Delivery.
type consumerSession = transport.Session

// sessionStarter sets a channel up and starts consuming on it; it blocks on
// broker round trips (called off the mailbox). See broker.StartSession.
type sessionStarter = transport.SessionStarter

// startBrokerSession is the production sessionStarter. It never returns a
// non-nil interface holding a nil *broker.Session.
func startBrokerSession(ch *amqp.Channel, cfg broker.SessionConfig) (consumerSession, amqp.Queue, error) {
	s, q, err := broker.StartSession(ch, cfg)
	if s == nil {
		return nil, q, err
	}
	return s, q, err
}

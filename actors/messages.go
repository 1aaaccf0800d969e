package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// Messages the connection actor accepts.

// Publish asks the connection actor to publish Req with a broker confirm.
// Req.Done is called exactly once with the outcome; while the broker is
// unreachable the request waits in a bounded buffer (ErrBufferFull beyond
// it) and is sent after reconnecting.
type Publish struct {
	Req *broker.Request
	// counted: sent by DirectPublish.Send, which counts it until the actor
	// took it.
	counted *DirectPublish
	// via: registered by DirectPublish.Send or Post until taken.
	via *DirectPublish
}

// Take claims the message for its receiver: true once, for whoever takes it
// first, the connection actor or, when that actor stopped with the message
// in its mailbox, the sweep that resolves it (see DirectPublish.Post). A
// receiver of Publish messages publishes Req only if Take reports true. A
// Publish made without DirectPublish is always taken.
func (m *Publish) Take() bool {
	return m.via == nil || m.via.claim(m)
}

// OpenChannel asks the connection actor for a channel on the consuming
// connection. The reply, a *ChannelReply with the same Nonce, is sent to
// ReplyTo once the connection is up. The receiver owns the channel.
type OpenChannel struct {
	ReplyTo *actor.PID
	Nonce   uint64
	// via: registered by DirectPublish.PostOpen until taken.
	via *DirectPublish
}

// Take claims the message for its receiver, as Publish.Take does: a
// receiver answers it only if Take reports true.
func (m *OpenChannel) Take() bool {
	return m.via == nil || m.via.claim(m)
}

// ChannelReply answers OpenChannel. Exactly one of Channel and Err is set.
// A receiver that no longer wants the channel must close it.
type ChannelReply struct {
	Nonce   uint64
	Channel *amqp.Channel
	Err     error
	// Setup is the connection's set-up pool: the receiver runs the
	// channel's set-up round trips on it (nil: on a goroutine of its own).
	Setup *broker.SetupPool
}

// StatusRequest asks the connection actor for a ConnectionStatus reply
// (use RequestFuture).
type StatusRequest struct{}

// ConnectionStatus is the state of the service's broker connections: the
// connection actor's reply to a StatusRequest. Package hato exports it as
// hato.ConnectionStatus (see Service.Status), which also fills Paused.
type ConnectionStatus struct {
	// Connected is set while the service is connected to the broker. A
	// publishing channel the broker closed (a channel-level error, such as
	// a publish refused for permissions) does not clear it: the connection
	// lives on and the channel is reopened; see Publishing.
	Connected bool
	// Publishing is set while the publishing channel is open. Publishes
	// made while it is not wait in the buffer (Buffered).
	Publishing bool
	// Generation increments on every successful (re)connection.
	Generation uint64
	// Blocked is set while the broker's flow control blocks publishing.
	Blocked bool
	// Buffered counts publishes waiting for a connection.
	Buffered int
	// Outstanding counts publishes sent and awaiting their confirm.
	Outstanding int
	// FailedAttempts counts connection attempts that failed since the last
	// successful one; LastError is the last such failure (nil once
	// connected), with any password redacted. They say why a service is
	// not connected.
	FailedAttempts int
	LastError      error
	// PublishNode and ConsumeNode are the broker nodes ("host:port", from
	// the URL dialed) the publishing and consuming connections are on;
	// empty while disconnected.
	PublishNode, ConsumeNode string
	// Paused lists the routes paused by their circuit breaker (see
	// hato.Service.PausedRoutes). The connection actor leaves it empty:
	// hato.Service.Status fills it.
	Paused []PausedRoute
}

// discarder is an internal async result that holds a resource (a session, a
// publisher) to release when the actor drops it as stale.
type discarder interface{ discard() }

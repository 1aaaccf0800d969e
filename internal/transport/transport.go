// Package transport is the seam between package hato's runtime and what
// carries its messages. The runtime (root supervisor, consumer actors,
// envelopes, middleware, failure policy, supervision) is the same whatever
// the transport; only two pieces change: the connection actor and how a
// consumer actor starts its consuming session. The default is the AMQP
// broker (package actors' connection actor, broker.StartSession); package
// hatotest provides an in-memory one.
//
// The package is internal: a service selects a transport only through
// package hatotest (hatotest.Transport), which gets a hato.Option from
// [Option].
package transport

import (
	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// Session is a consuming session as a consumer actor sees it (a
// *broker.Session on the broker). Deliveries are settled through each
// *broker.Delivery. Cancel stops deliveries but keeps the session so
// deliveries in hand can still be settled; Close ends it, and the
// transport requeues whatever is unsettled. Neither blocks. The session
// calls its config's Closed exactly once, after its last Deliver.
type Session interface {
	Cancel()
	Close()
}

// SessionStarter sets a channel up (the route's topology, QoS) and starts
// consuming on it, as broker.StartSession does; it may block (consumer
// actors call it off their mailbox). ch is what the connection actor
// handed out in its ChannelReply: nil for a transport that needs none. On
// error it never calls cfg's callbacks.
type SessionStarter func(ch *amqp.Channel, cfg broker.SessionConfig) (Session, amqp.Queue, error)

// Transport carries a service's messages.
type Transport interface {
	// ConnectionProps returns the props of the service's connection actor,
	// the root supervisor's child called name. It must answer what package
	// actors documents for the connection actor: actors.Publish (finish the
	// request once the message is routed), actors.OpenChannel (a
	// ChannelReply), actors.StatusRequest and supervisor.Drain; and report
	// supervisor.ChildReady to its parent once it is ready.
	ConnectionProps(name string, log *zap.Logger) *actor.Props
	// StartSession starts a consumer actor's session.
	StartSession(ch *amqp.Channel, cfg broker.SessionConfig) (Session, amqp.Queue, error)
}

// Option returns a hato.Option (as any: this package cannot import hato)
// that makes a service use t. Package hato sets it when it is initialised.
var Option func(t Transport) any

// Memory returns the in-memory transport of a *hatotest.Broker (b), for
// tests that drive a Session directly (internal/conformance). Package
// hatotest sets it when it is initialised.
var Memory func(b any) Transport

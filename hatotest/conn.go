package hatotest

import (
	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/transport"
	"github.com/hato-go/hato/supervisor"
)

// memTransport connects a service to a Broker.
type memTransport struct{ b *Broker }

var _ transport.Transport = memTransport{}

func init() {
	transport.Memory = func(b any) transport.Transport { return memTransport{b: b.(*Broker)} }
}

// ConnectionProps implements transport.Transport: the connection actor
// publishes into the broker.
func (t memTransport) ConnectionProps(name string, _ *zap.Logger) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return &connection{b: t.b, name: name} })
}

// StartSession implements transport.Transport.
func (t memTransport) StartSession(_ *amqp.Channel, cfg broker.SessionConfig) (transport.Session, amqp.Queue, error) {
	return t.b.startSession(cfg)
}

// connection stands in for the connection actor: it answers the messages
// package actors documents. A publish is routed and finished (confirmed)
// at once; channels are nil (the in-memory sessions need none); it is
// always connected.
type connection struct {
	b    *Broker
	name string
}

// Receive implements actor.Actor.
func (c *connection) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		ctx.Send(ctx.Parent(), &supervisor.ChildReady{Name: c.name})
	case *actors.Publish:
		if msg.Take() {
			c.b.publish(msg.Req)
		}
	case *actors.OpenChannel:
		if msg.Take() {
			ctx.Send(msg.ReplyTo, &actors.ChannelReply{Nonce: msg.Nonce})
		}
	case *actors.StatusRequest:
		ctx.Respond(&actors.ConnectionStatus{Connected: true, Publishing: true, Generation: 1})
	case *supervisor.Drain:
		close(msg.Done) // every publish already has its outcome
	}
}

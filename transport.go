package hato

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/internal/transport"
)

// A service talks to RabbitMQ unless package hatotest gives it its
// in-memory broker: hatotest.Transport returns the Option this hook makes.
// The hook keeps the transport seam out of hato's public API.
func init() {
	transport.Option = func(t transport.Transport) any {
		return serviceOption(func(c *config) error {
			if t == nil {
				return invalid("nil transport")
			}
			c.transport = t
			return nil
		})
	}
}

// connectionProps are the props of the service's connection actor: the
// broker's, or the transport's.
func (s *Service) connectionProps() *actor.Props {
	if t := s.cfg.transport; t != nil {
		return t.ConnectionProps("connection", s.log.Named("connection"))
	}
	return actors.ConnectionProps(actors.ConnectionConfig{
		Name:                  "connection",
		Publish:               s.dialConfig("pub"),
		Consume:               s.dialConfig("sub"),
		URLs:                  shuffled(s.cfg.urls),
		Reconnect:             s.cfg.reconnect,
		PublishBuffer:         s.cfg.publishBuffer,
		ChannelsPerConnection: s.cfg.channelsPerConnection,
		Logger:                s.log.Named("connection"),
		Direct:                &s.direct,
	})
}

// sessionStarter is how the service's consumer actors start consuming: nil
// for the broker, else the transport's.
func (s *Service) sessionStarter() transport.SessionStarter {
	if s.cfg.sessionStarter != nil {
		return s.cfg.sessionStarter
	}
	if t := s.cfg.transport; t != nil {
		return t.StartSession
	}
	return nil
}

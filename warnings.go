package hato

import (
	"regexp"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope"
)

// closureName matches the name Go gives a function literal ("func1"): a
// handler without a name of its own.
var closureName = regexp.MustCompile(`^func\d+$`)

// warnRoute logs the registration mistakes that pass silently: a closure
// as handler, whose default name "funcN" shows in route names, logs and
// metric labels and names a non-competing route's queue; and a competing
// route on a queue another route of the service already consumes, which
// splits the messages between them (tomodachi does the same). s.mu is
// held; r is registered already.
func (s *Service) warnRoute(r *route) {
	if closureName.MatchString(r.cfg.handlerName) {
		s.log.Warn("handler is a function literal: its name "+r.cfg.handlerName+
			" shows in route names, logs and metrics (and names a non-competing route's queue); set HandlerName",
			zap.String("route", r.name), zap.String("routing_key", r.cfg.routingKey))
	}
	for _, o := range s.routes {
		if o != r && o.cfg.queue == r.cfg.queue && r.cfg.competing {
			s.log.Warn("two routes consume one queue: each message goes to one of them, not to both (as in tomodachi); "+
				"use HandlerName with NotCompeting, or QueueName, for routes that must each see every message",
				zap.String("route", r.name), zap.String("other_route", o.name), zap.String("queue", r.cfg.queue))
		}
	}
}

// isProto reports whether a T (or *T) is a generated protobuf message.
func isProto[T any]() bool {
	var zero T
	if _, ok := any(zero).(proto.Message); ok {
		return true
	}
	_, ok := any(&zero).(proto.Message)
	return ok
}

// isJSON reports whether env is the JSON envelope.
func isJSON(env envelope.Envelope) bool {
	switch env.(type) {
	case envelope.JSONEnvelope, *envelope.JSONEnvelope:
		return true
	}
	return false
}

// warnProtoOnJSON warns when a route decodes a protobuf message type from
// the JSON envelope: encoding/json fills the generated struct's exported
// fields, not what a protobuf publisher sent. Envelope(envelope.Protobuf)
// is almost always what was meant.
func warnProtoOnJSON[T any](s *Service, rc routeConfig) {
	env := rc.envelope
	if env == nil {
		env = s.cfg.envelope
	}
	if isJSON(env) && isProto[T]() {
		s.log.Warn("route decodes a protobuf message type from the JSON envelope: add Envelope(envelope.Protobuf)",
			zap.String("routing_key", rc.routingKey))
	}
}

// warnPublishProtoOnJSON warns once per service when a protobuf message is
// published in the JSON envelope (encoding/json's view of the generated
// struct goes out).
func (s *Service) warnPublishProtoOnJSON(env envelope.Envelope, data any, routingKey string) {
	if _, ok := data.(proto.Message); !ok || !isJSON(env) {
		return
	}
	s.protoWarn.Do(func() {
		s.log.Warn("publishing a protobuf message in the JSON envelope sends encoding/json's view of the generated struct: "+
			"add Envelope(envelope.Protobuf) (warned once)", zap.String("routing_key", routingKey))
	})
}

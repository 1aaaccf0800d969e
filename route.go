package hato

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// Handler handles one message of a route. Its error decides the message's
// fate: nil acks it (once every publish the handler made is confirmed);
// Requeue, Retry, DeadLetter and Drop say what to do; any other error is
// retried in process per the route's FailurePolicy, then dead-lettered.
// ctx is cancelled when the service stops and the drain deadline passed.
type Handler[T any] func(ctx context.Context, msg *Message[T]) error

// Message is what a handler receives: tomodachi's data, metadata, service,
// routing_key, exchange_name, properties and message_uuid, and the delivery
// facts tomodachi hides.
type Message[T any] struct {
	// Data is the payload decoded into the handler's type.
	Data T
	// Service is the sender, as its envelope says.
	Service envelope.Service
	// Metadata is the envelope's metadata (message uuid, protocol version,
	// timestamp, topic, data encoding).
	Metadata envelope.Metadata
	// RoutingKey is the subscribed key or pattern, without prefix
	// (tomodachi's routing_key).
	RoutingKey string
	// DeliveredRoutingKey is the key the message was published with, prefix
	// stripped, decoded.
	DeliveredRoutingKey string
	// Exchange is the exchange the message came through.
	Exchange string
	// Queue is the route's queue.
	Queue string
	// Properties are the AMQP basic properties.
	Properties Properties
	// Redelivered is set when the broker delivered the message before.
	Redelivered bool
	// DeliveryCount is the broker's delivery count (quorum queues); 0 when
	// the queue does not count.
	DeliveryCount int
	// Retry is how many delayed retries (FailurePolicy.RetryDelays) the
	// message has been through: 0 on its first delivery.
	Retry int
	// Body is the raw message body.
	Body []byte

	ctx   context.Context
	typed any         // for middleware's untyped view: the typed *Message
	log   *zap.Logger // the service's
}

// MessageUUID is Metadata.MessageUUID.
func (m *Message[T]) MessageUUID() string { return m.Metadata.MessageUUID }

// Context is the context the message is handled in. An actor receiving
// messages of an actor route passes it to Service.Publish so its publishes
// are confirmed before the message is acked.
func (m *Message[T]) Context() context.Context {
	if m.ctx == nil {
		return context.Background()
	}
	return m.ctx
}

// Logger is the service's logger with the message's trace and span ids
// (trace_id, span_id: see TraceFields) and its message uuid, so the
// handler's logs join its trace.
func (m *Message[T]) Logger() *zap.Logger {
	l := m.log
	if l == nil {
		l = zap.NewNop()
	}
	fields := TraceFields(m.Context())
	if id := m.Metadata.MessageUUID; id != "" {
		fields = append(fields, zap.String("message_uuid", id))
	}
	return l.With(fields...)
}

// Properties are a delivery's AMQP basic properties.
type Properties struct {
	ContentType     string
	ContentEncoding string
	Headers         amqp.Table
	DeliveryMode    uint8
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string
	MessageID       string
	Timestamp       time.Time
	Type            string
	UserID          string
	AppID           string
}

// route is a registered subscription.
type route struct {
	cfg    routeConfig
	name   string // actor name
	handle func(s *Service) func(ctx context.Context, d *broker.Delivery) error
}

// Subscribe registers h for messages published with routingKey (topic
// wildcards * and # work), tomodachi's @amqp(routing_key, ...). The payload
// is decoded into T by the route's envelope: any JSON-decodable type (or
// `any` for the untyped form) with the JSON envelope, a generated protobuf
// message pointer type with envelope.Protobuf, []byte or string with
// envelope.Raw. Call it before Start. A configuration error is returned and
// also makes Start fail.
func Subscribe[T any](s *Service, routingKey string, h Handler[T], opts ...RouteOption) error {
	if h == nil {
		return s.register(nil, invalid("nil handler for %q", routingKey))
	}
	rc, err := s.routeConfig(routingKey, funcName(h), opts)
	if err != nil {
		return s.register(nil, err)
	}
	if err := checkEnvelope[T](rc); err != nil {
		return s.register(nil, err)
	}
	warnProtoOnJSON[T](s, rc)
	r := &route{cfg: rc}
	r.handle = func(s *Service) func(ctx context.Context, d *broker.Delivery) error {
		return handleWith(s, &r.cfg, s.deduper(r), h)
	}
	return s.register(r, nil)
}

// Ack is the reply an actor route's actor sends (ctx.Respond(hato.Ack{}))
// when it handled a message; it replies with an error otherwise (the
// directives Requeue, Retry, DeadLetter and Drop work there too).
type Ack struct{}

// SubscribeActor registers a route whose handler is an actor: pid receives
// each decoded message as a *Message[T] and must reply (ctx.Respond) with
// Ack{} or an error within the route's ActorTimeout. A timeout or another
// reply counts as a handler error. Publishes the actor makes with
// msg.Context() are confirmed before the message is acked.
func SubscribeActor[T any](s *Service, routingKey string, pid *actor.PID, opts ...RouteOption) error {
	if pid == nil {
		return s.register(nil, invalid("nil actor for %q", routingKey))
	}
	rc, err := s.routeConfig(routingKey, "actor_"+sanitize(pid.Id), opts)
	if err != nil {
		return s.register(nil, err)
	}
	if err := checkEnvelope[T](rc); err != nil {
		return s.register(nil, err)
	}
	timeout := rc.actorTimeout
	if timeout <= 0 {
		timeout = DefaultActorTimeout
	}
	h := func(s *Service) Handler[T] {
		return func(ctx context.Context, msg *Message[T]) error {
			res, err := s.system.Root.RequestFuture(pid, msg, timeout).Result()
			if err != nil {
				return fmt.Errorf("actor %s: %w", pid.Id, err)
			}
			switch v := res.(type) {
			case Ack, *Ack:
				return nil
			case error:
				return v
			default:
				return fmt.Errorf("actor %s: unexpected reply %T", pid.Id, res)
			}
		}
	}
	r := &route{cfg: rc}
	r.handle = func(s *Service) func(ctx context.Context, d *broker.Delivery) error {
		return handleWith(s, &r.cfg, s.deduper(r), h(s))
	}
	return s.register(r, nil)
}

// handleWith is a route's delivery handler: decode into T, then the
// de-duplication (when dd is set), the middleware chain (skipped, with its
// untyped view, when there is none), then h. Errors carry the message uuid
// for logs. rc is the route's own config, not a copy: an idle route keeps
// one.
func handleWith[T any](s *Service, rc *routeConfig, dd *deduper, h Handler[T]) func(ctx context.Context, d *broker.Delivery) error {
	run := func(ctx context.Context, msg *Message[T]) error { return h(ctx, msg) }
	if len(s.cfg.middleware) > 0 {
		chain := s.chain(func(ctx context.Context, m *Message[any]) error {
			return h(ctx, m.typed.(*Message[T]))
		})
		run = func(ctx context.Context, msg *Message[T]) error { return chain(ctx, untyped(msg)) }
	}
	return func(ctx context.Context, d *broker.Delivery) error {
		msg, err := decode[T](s, rc, d)
		if err != nil {
			return err
		}
		msg.ctx = ctx
		uuid := msg.Metadata.MessageUUID
		if dd == nil {
			return messageError(uuid, run(ctx, msg))
		}
		return messageError(uuid, dd.run(ctx, uuid, d, func(ctx context.Context) error {
			msg.ctx = ctx // carries the dedupe key (DedupeKey)
			return run(ctx, msg)
		}))
	}
}

func (s *Service) routeConfig(routingKey, handlerName string, opts []RouteOption) (routeConfig, error) {
	rc := routeConfig{
		routingKey:  routingKey,
		competing:   true,
		handlerName: handlerName,
		concurrency: 1,
	}
	for _, o := range opts {
		if o == nil {
			return rc, invalid("nil route option for %q", routingKey)
		}
		if err := o.applyRoute(&rc); err != nil {
			return rc, fmt.Errorf("route %q: %w", routingKey, err)
		}
	}
	rc.queue = s.queueOf(rc)
	return rc, nil
}

// checkEnvelope runs the envelope's registration check (tomodachi's
// validate()) against the payload type.
func checkEnvelope[T any](rc routeConfig) error {
	c, ok := rc.envelope.(envelope.Checker)
	if !ok || rc.envelope == nil {
		return nil
	}
	var zero T
	if err := c.Check(&zero, rc.envOpts); err != nil {
		return fmt.Errorf("route %q: %w: %w", rc.routingKey, ErrInvalidOption, err)
	}
	return nil
}

// decode parses a delivery into a typed message. An envelope error becomes
// a dead-letter directive: an undecodable message must never be requeued.
func decode[T any](s *Service, rc *routeConfig, d *broker.Delivery) (*Message[T], error) {
	msg := &Message[T]{
		RoutingKey:          rc.routingKey,
		DeliveredRoutingKey: broker.StripPrefix(s.cfg.routingKeyPrefix, broker.DecodeRoutingKey(d.RoutingKey)),
		Exchange:            d.Exchange,
		Queue:               rc.queue,
		Redelivered:         d.Redelivered,
		Body:                d.Body,
		log:                 s.log,
		Properties: Properties{
			ContentType: d.ContentType, ContentEncoding: d.ContentEncoding, Headers: d.Headers,
			DeliveryMode: d.DeliveryMode, Priority: d.Priority, CorrelationID: d.CorrelationId,
			ReplyTo: d.ReplyTo, Expiration: d.Expiration, MessageID: d.MessageId, Timestamp: d.Timestamp,
			Type: d.Type, UserID: d.UserId, AppID: d.AppId,
		},
	}
	if n, ok := d.Headers["x-delivery-count"].(int64); ok {
		msg.DeliveryCount = int(n)
	}
	msg.Retry = actors.RetryOf(d.Headers) // outage
	env := rc.envelope
	if env == nil {
		env = s.cfg.envelope
	}
	parsed, err := env.Parse(d.Body, &msg.Data, rc.envOpts)
	if err != nil {
		return nil, &actors.Directive{Action: actors.DeadLetter, Err: &DecodeError{
			Envelope: env.Name(), MessageID: d.MessageId, RoutingKey: msg.DeliveredRoutingKey, Err: err,
		}}
	}
	msg.Service, msg.Metadata = parsed.Service, parsed.Metadata
	return msg, nil
}

// untyped is the view of a typed message that middleware sees.
func untyped[T any](m *Message[T]) *Message[any] {
	return &Message[any]{
		Data: m.Data, Service: m.Service, Metadata: m.Metadata, RoutingKey: m.RoutingKey,
		DeliveredRoutingKey: m.DeliveredRoutingKey, Exchange: m.Exchange, Queue: m.Queue,
		Properties: m.Properties, Redelivered: m.Redelivered, DeliveryCount: m.DeliveryCount, Retry: m.Retry,
		Body: m.Body, ctx: m.ctx, typed: m, log: m.log,
	}
}

func (s *Service) queueOf(rc routeConfig) string {
	if rc.queueName != "" {
		return broker.FixedQueueName(rc.queueName, s.cfg.queueNamePrefix)
	}
	return broker.QueueName(rc.routingKey, rc.handlerName, s.uuid, rc.competing, s.cfg.queueNamePrefix)
}

// deadLetterQueueOf is the route's default dead-letter queue: shared by
// every instance of the service, also for a non-competing route (see
// broker.DeadLetterQueueName).
func (s *Service) deadLetterQueueOf(rc routeConfig) string {
	perInstance := !rc.competing && rc.queueName == ""
	return broker.DeadLetterQueueName(rc.queue, rc.routingKey, rc.handlerName, s.name, perInstance, s.cfg.queueNamePrefix)
}

// funcName is the short name of a Go function value, as tomodachi uses the
// method's __name__.
func funcName(fn any) string {
	name := runtime.FuncForPC(reflect.ValueOf(fn).Pointer()).Name()
	name = strings.TrimSuffix(name, "-fm")
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	if name == "" {
		return "handler"
	}
	return name
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '$' || r == '#' {
			return '_'
		}
		return r
	}, s)
}

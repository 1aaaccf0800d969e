package hato

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// InstrumentationName names hato's tracer and meter (tomodachi's is
// "tomodachi").
const InstrumentationName = "github.com/hato-go/hato"

// Attribute keys, as tomodachi's OpenTelemetry instrumentation writes them.
const (
	attrSystem     = "messaging.system"
	attrOperation  = "messaging.operation"
	attrDest       = "messaging.destination.name"
	attrRoutingKey = "messaging.rabbitmq.destination.routing_key"
	attrFunction   = "code.function"
	attrSuccess    = "function.success"
	attrRoute      = "hato.route"
	attrReason     = "hato.reason"
)

// WithTracerProvider traces handling and publishing with tp instead of the
// global provider (otel.GetTracerProvider). Spans follow tomodachi's:
// CONSUMER "<routing key> process" around each handler run, a child of the
// trace context the message carried, and PRODUCER "<routing key> publish"
// for each publish, whose context travels in the message's traceparent and
// tracestate headers. With a no-op provider (trace/noop), or the global one
// while otel.SetTracerProvider was not called, no span is started (not even
// a no-op one): the handler's context carries the incoming trace context,
// which its publishes forward unchanged.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return serviceOption(func(c *config) error {
		if tp == nil {
			return invalid("nil tracer provider")
		}
		c.tracerProvider = tp
		return nil
	})
}

// WithMeterProvider records hato's metrics (see the package doc) with mp
// instead of the global provider (otel.GetMeterProvider). With a no-op
// provider (metric/noop), or the global one while otel.SetMeterProvider
// was not called (and no ops server), nothing is measured: not even the
// handler's duration is timed.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return serviceOption(func(c *config) error {
		if mp == nil {
			return invalid("nil meter provider")
		}
		c.meterProvider = mp
		return nil
	})
}

// WithPropagator sets how trace context is read from and written to
// message headers. Default: W3C Trace Context (traceparent, tracestate),
// what tomodachi uses, whatever the global propagator is, so trace context
// passes through a service even with no tracing configured.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return serviceOption(func(c *config) error {
		if p == nil {
			return invalid("nil propagator")
		}
		c.propagator = p
		return nil
	})
}

// telemetry is a service's tracer, propagator and instruments.
type telemetry struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	w3c    bool                 // prop is propagation.TraceContext: see extractW3C, injectW3C
	never  bool                 // the tracer provider is a no-op one: no spans (see spans)
	global trace.TracerProvider // the global provider's placeholder the tracer is from, or nil
	meters []*instruments       // the configured (or global) meter's, then the ops server's
	log    *zap.Logger

	// The measurement attributes of publishes to the service's exchange,
	// built once.
	exchange string
	pubAttrs []metric.AddOption
	status   func(context.Context) (ConnectionStatus, error)
	pauses   *pauseBook // outage: the routes' breakers, for their gauges

	pubKeys cache[publishKey, *publishTelemetry] // see publishKey
	events  cache[[2]string, []metric.AddOption] // by route and dead-letter reason ("": none)
	// routes holds, by route name, the attributes every measurement of the
	// route's messages carries (exchange, routing key, code.function), so
	// that event counts carry them too. Written by nameRoute at spawn,
	// before any delivery; read by eventAttrs.
	routes sync.Map
}

// nameRoute records the attributes of the route named name (see routes).
func (t *telemetry) nameRoute(name string, rt *routeTelemetry) {
	t.routes.Store(name, []attribute.KeyValue{
		attribute.String(attrDest, rt.exchange),
		attribute.String(attrRoutingKey, rt.routingKey),
		attribute.String(attrFunction, rt.handlerName),
	})
}

// consumerOpts and producerOpts are the spans' start options.
var (
	consumerOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}
	producerOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}
)

// noAttrs measures without attributes.
var noAttrs = []metric.AddOption{metric.WithAttributeSet(*attribute.EmptySet())}

// newTelemetry sets up tracing and the instruments on the configured (or
// global) meter provider; status feeds the publish gauges (nil: none).
func newTelemetry(c *config, log *zap.Logger, status func(context.Context) (ConnectionStatus, error)) *telemetry {
	tp := c.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	prop := c.propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	mp := c.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	t := &telemetry{tracer: tp.Tracer(InstrumentationName), prop: prop, never: neverRecords(tp),
		log: log, exchange: orDefaultExchange(c.exchange), status: status, pauses: c.pauses}
	_, t.w3c = prop.(propagation.TraceContext)
	if isGlobalPlaceholder(tp) {
		t.global = tp
	}
	t.pubAttrs = exchangeAttrs(t.exchange)
	t.addMeter(mp)
	return t
}

func (t *telemetry) addMeter(mp metric.MeterProvider) {
	m := mp.Meter(InstrumentationName)
	in, err := newInstruments(m)
	in.never = isNoopMeter(mp)
	if isGlobalMeterPlaceholder(mp) {
		in.global = mp
	}
	if err == nil && t.status != nil {
		err = in.observe(m, t.status)
	}
	if err == nil && t.pauses != nil {
		err = t.pauses.observe(m) // outage: breaker gauges
	}
	if err != nil {
		t.log.Warn("some metric instruments could not be created", zap.Error(err))
	}
	t.meters = append(t.meters, in)
}

// count adds one to counter c. Counters and up-down counters are given no
// trace context, so they offer no exemplars: only the duration histogram
// does (a sampled span's measurement is an exemplar, and offering one
// costs on every message).
func (t *telemetry) count(c counter, opts []metric.AddOption) {
	for _, m := range t.meters {
		m.counters[c].Add(context.Background(), 1, opts...)
	}
}

func orDefaultExchange(exchange string) string {
	if exchange == "" {
		return "amq.topic"
	}
	return exchange
}

func exchangeAttrs(exchange string) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String(attrDest, exchange)))}
}

// headers is an amqp.Table as a propagation carrier. Values are written as
// Go strings (AMQP long strings): tomodachi reads those and ignores byte
// arrays, which is what amqp091-go makes of []byte. The table is copied on
// the first write, so the caller's is never changed.
type headers struct {
	t      amqp.Table
	copied bool
}

func (h *headers) Get(key string) string {
	v, _ := h.t[key].(string)
	return v
}

func (h *headers) Set(key, value string) {
	if !h.copied {
		t := make(amqp.Table, len(h.t)+2)
		for k, v := range h.t {
			t[k] = v
		}
		h.t, h.copied = t, true
	}
	h.t[key] = value
}

func (h *headers) Keys() []string {
	keys := make([]string, 0, len(h.t))
	for k := range h.t {
		keys = append(keys, k)
	}
	return keys
}

// routeTelemetry is what a route's spans and measurements carry, built
// once per route, on the route's first delivery (an idle route holds none
// of it), so the hot path allocates nothing for them.
type routeTelemetry struct {
	once                              sync.Once
	exchange, routingKey, handlerName string

	spanName  string
	spanAttrs []attribute.KeyValue  // set after the span started (cheaper than start options)
	attrs     []metric.AddOption    // destination, routing key, function
	ok, fail  []metric.RecordOption // attrs plus function.success
	settled   func(error)           // ends a delivery's in-flight count
}

func newRouteTelemetry(exchange string, rc routeConfig) *routeTelemetry {
	return &routeTelemetry{exchange: orDefaultExchange(exchange), routingKey: rc.routingKey, handlerName: rc.handlerName}
}

// load builds the route's attributes, once.
func (rt *routeTelemetry) load() *routeTelemetry {
	rt.once.Do(rt.build)
	return rt
}

func (rt *routeTelemetry) build() {
	base := []attribute.KeyValue{
		attribute.String(attrDest, rt.exchange),
		attribute.String(attrRoutingKey, rt.routingKey),
		attribute.String(attrFunction, rt.handlerName),
	}
	with := func(extra ...attribute.KeyValue) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), extra...)...))
	}
	rec := func(o metric.MeasurementOption) []metric.RecordOption { return []metric.RecordOption{o} }
	rt.spanName = rt.routingKey + " process"
	rt.spanAttrs = append([]attribute.KeyValue{
		attribute.String(attrSystem, "rabbitmq"),
		attribute.String(attrOperation, "process"),
	}, base...)
	rt.attrs = []metric.AddOption{with()}
	rt.ok = rec(with(attribute.Bool(attrSuccess, true)))
	rt.fail = rec(with(attribute.Bool(attrSuccess, false)))
}

// consumer wraps a route's delivery handler: the trace context the message
// carries is extracted, the handler runs in a CONSUMER span (its child),
// and the handler's duration, the tasks running and the deliveries in
// flight are measured.
func (t *telemetry) consumer(rt *routeTelemetry, next func(context.Context, *broker.Delivery) error) func(context.Context, *broker.Delivery) error {
	rt.settled = func(error) {
		if t.metered() {
			t.upDown(upInFlight, -1, rt.load().attrs)
		}
	}
	return func(ctx context.Context, d *broker.Delivery) (err error) {
		// rt is built on the first run that measures or records: a route
		// with telemetry off holds none of it.
		r := runTrace{rt: rt, measured: t.metered()}
		ctx, r.span = t.startConsumer(ctx, rt, d.Headers)
		if !r.measured && r.span == nil {
			return next(ctx, d)
		}
		if r.measured {
			rt.load()
			t.startRun(ctx, &r, d)
		}
		defer func() {
			v := recover()
			if v != nil {
				err = &actors.HandlerPanic{Value: v}
			}
			t.finishRun(ctx, &r, err)
			if v != nil {
				panic(v)
			}
		}()
		return next(ctx, d)
	}
}

// runTrace is one handler run's span and measurements.
type runTrace struct {
	rt       *routeTelemetry
	span     trace.Span // nil: none (see spans)
	measured bool       // see metered
	settle   bool       // the run ends its in-flight count (no tracker does)
	start    time.Time
}

// startRun counts the run (a retry, a redelivery) and the deliveries
// active and in flight, and starts its clock.
func (t *telemetry) startRun(ctx context.Context, r *runTrace, d *broker.Delivery) {
	t.countRun(ctx, r.rt, d)
	t.upDown(upActive, 1, r.rt.attrs)
	t.upDown(upInFlight, 1, r.rt.attrs)
	if tr := actors.TrackerFrom(ctx); tr == nil || !tr.AfterSettle(r.rt.settled) {
		r.settle = true
	}
	r.start = time.Now()
}

// startConsumer extracts the trace context of a message's headers h and
// starts its CONSUMER span, a child of it. Without spans (see spans), ctx
// only carries the incoming trace context, as a no-op span would, and the
// span is nil.
func (t *telemetry) startConsumer(ctx context.Context, rt *routeTelemetry, h amqp.Table) (_ context.Context, span trace.Span) {
	if t.w3c {
		ctx = withIncoming(ctx, h)
	} else {
		ctx = t.prop.Extract(ctx, &headers{t: h})
	}
	if !t.spans() {
		return ctx, nil
	}
	rt.load()
	ctx, span = t.tracer.Start(ctx, rt.spanName, consumerOpts...)
	span.SetAttributes(rt.spanAttrs...) // nothing if it does not record
	return ctx, span
}

// countRun counts a retried run and a redelivered message.
func (t *telemetry) countRun(ctx context.Context, rt *routeTelemetry, d *broker.Delivery) {
	tr := actors.TrackerFrom(ctx)
	if tr == nil {
		return
	}
	if tr.Attempt() > 1 {
		t.count(cRetries, rt.attrs)
	}
	if d.Redelivered && tr.FirstRun() {
		t.count(cRedelivered, rt.attrs)
	}
}

// finishRun ends the run's span and measures its outcome.
func (t *telemetry) finishRun(ctx context.Context, r *runTrace, err error) {
	switch {
	case r.span == nil:
	case err != nil:
		r.span.RecordError(err)
		r.span.SetStatus(codes.Error, err.Error())
		r.span.End()
	default:
		r.span.SetStatus(codes.Ok, "")
		r.span.End()
	}
	if !r.measured {
		return
	}
	res := r.rt.ok
	if err != nil {
		res = r.rt.fail
	}
	secs := time.Since(r.start).Seconds()
	for _, m := range t.meters {
		m.duration.Record(ctx, secs, res...)
	}
	t.upDown(upActive, -1, r.rt.attrs)
	if r.settle {
		t.upDown(upInFlight, -1, r.rt.attrs)
	}
}

func (t *telemetry) upDown(u upDown, n int64, opts []metric.AddOption) {
	for _, m := range t.meters {
		m.upDowns[u].Add(context.Background(), n, opts...)
	}
}

// publishTrace is one publish's PRODUCER span and measurement attributes.
type publishTrace struct {
	t     *telemetry
	ctx   context.Context
	span  trace.Span         // nil: none (see spans)
	attrs []metric.AddOption // nil: not measured (see metered)
}

// startPublish starts the PRODUCER span of a publish of key (without
// prefix) to exchange and writes its context into msg's headers (a copy).
// Without spans (see spans) the context written is the one ctx carries.
func (t *telemetry) startPublish(ctx context.Context, exchange, key string, msg *amqp.Publishing) publishTrace {
	var span trace.Span
	var attrs []metric.AddOption
	if traced, measured := t.spans(), t.metered(); traced || measured {
		pk := t.publishKey(exchange, key)
		if measured {
			attrs = pk.attrs
		}
		if traced {
			ctx, span = t.tracer.Start(ctx, pk.spanName, producerOpts...)
			span.SetAttributes(pk.spanAttrs...) // nothing if it does not record
		}
	}
	if t.w3c {
		injectW3C(ctx, msg)
	} else {
		h := headers{t: msg.Headers}
		t.prop.Inject(ctx, &h)
		msg.Headers = h.t
	}
	return publishTrace{t: t, ctx: ctx, span: span, attrs: attrs}
}

// publishTelemetry is what the spans and measurements of publishes of one
// key to one exchange carry, built once (see publishKey).
type publishTelemetry struct {
	spanName  string
	spanAttrs []attribute.KeyValue
	attrs     []metric.AddOption
}

type publishKey struct{ exchange, key string }

// publishKey returns the publishTelemetry of key on exchange.
func (t *telemetry) publishKey(exchange, key string) *publishTelemetry {
	exchange = orDefaultExchange(exchange)
	return t.pubKeys.get(publishKey{exchange, key}, func() *publishTelemetry {
		attrs := t.pubAttrs
		if exchange != t.exchange {
			attrs = exchangeAttrs(exchange)
		}
		return &publishTelemetry{spanName: key + " publish", attrs: attrs, spanAttrs: []attribute.KeyValue{
			attribute.String(attrSystem, "rabbitmq"),
			attribute.String(attrOperation, "publish"),
			attribute.String(attrDest, exchange),
			attribute.String(attrRoutingKey, key),
		}}
	})
}

// maxCached bounds the entries a cache keeps: the others' values are
// built each time.
const maxCached = 256

// cache is a small copy-on-write map, read without locking, of values
// built once per key: the measurement options and span attributes of the
// keys published to, the routes and reasons of events.
type cache[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// get returns k's value, built by build if k has none.
func (c *cache[K, V]) get(k K, build func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	v := build()
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		old = *m
	}
	if cached, ok := old[k]; ok {
		return cached
	}
	if len(old) < maxCached {
		next := make(map[K]V, len(old)+1)
		maps.Copy(next, old)
		next[k] = v
		c.m.Store(&next)
	}
	return v
}

// handed records a publish handed to the connection actor.
func (p publishTrace) handed() {
	if p.attrs != nil {
		p.t.count(cPublished, p.attrs)
	}
}

// finish records the publish's outcome and ends its span.
func (p publishTrace) finish(err error) {
	if p.attrs != nil {
		switch {
		case err == nil:
			p.t.count(cConfirmed, p.attrs)
		case errors.Is(err, broker.ErrNacked):
			p.t.count(cNacked, p.attrs)
		case errors.Is(err, broker.ErrUnroutable):
			p.t.count(cReturned, p.attrs)
		}
	}
	switch {
	case p.span == nil:
		return
	case err == nil:
		p.span.SetStatus(codes.Ok, "")
	default:
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, err.Error())
	}
	p.span.End()
}

// deliveryEvent counts a dead-lettered or dropped message.
func (t *telemetry) deliveryEvent(e actors.DeliveryEvent) {
	switch e.Action {
	case actors.DeadLetter:
		t.count(cDeadLettered, t.eventAttrs(e.Route, deadLetterReason(e.Err)))
	case actors.Drop:
		t.count(cDropped, t.eventAttrs(e.Route, ""))
	}
}

// eventAttrs are the measurement options of an event of route, with a
// dead-letter reason unless "".
func (t *telemetry) eventAttrs(route, reason string) []metric.AddOption {
	return t.events.get([2]string{route, reason}, func() []metric.AddOption {
		kvs := []attribute.KeyValue{attribute.String(attrRoute, route)}
		if base, ok := t.routes.Load(route); ok {
			kvs = append(kvs, base.([]attribute.KeyValue)...)
		}
		if reason != "" {
			kvs = append(kvs, attribute.String(attrReason, reason))
		}
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kvs...))}
	})
}

// deadLetterReason classifies why a message was dead-lettered:
// undecodable (the envelope refused it), invalid (decoded, but the route's
// Validator refused it), handler (the handler returned
// DeadLetter), attempts (its handler failed every attempt), redeliveries
// (requeued, redelivered or crashed the route too often), other.
func deadLetterReason(err error) string {
	if err == nil {
		return "other"
	}
	var de *DecodeError
	var d *actors.Directive
	msg := err.Error()
	switch {
	case errors.As(err, &de) && errors.Is(err, envelope.ErrValidation):
		return "invalid"
	case errors.As(err, &de):
		return "undecodable"
	case strings.HasPrefix(msg, "failed "):
		return "attempts"
	case strings.HasPrefix(msg, "requeued ") || strings.HasPrefix(msg, "poison message"):
		return "redeliveries"
	case errors.As(err, &d) && d.Action == actors.DeadLetter:
		return "handler"
	}
	return "other"
}

// supervisorEvent counts restarts, give-ups, reconnections and stuck
// routes.
func (t *telemetry) supervisorEvent(e supervisorEventView, firstReady bool) {
	switch {
	case e.kind == EventReady && e.child == "connection" && !firstReady:
		t.count(cReconnects, noAttrs)
	case e.child == "connection":
	case e.kind == EventRestarted || e.kind == EventRespawned:
		t.count(cRestarts, t.eventAttrs(e.child, ""))
	case e.kind == EventGaveUp:
		t.count(cGiveUps, t.eventAttrs(e.child, ""))
	case e.kind == EventUnavailable && stallReason(e.reason) != "":
		t.count(cStalls, t.eventAttrs(e.child, stallReason(e.reason)))
	}
}

type supervisorEventView struct {
	kind   EventKind
	child  string
	reason error
}

// TraceFields returns zap fields with the trace and span ids of the span
// in ctx (trace_id, span_id), so a handler's logs join its trace; none
// when ctx carries no valid span context.
func TraceFields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}

package hato

import (
	"context"
	"errors"
	"strings"
	"sync"
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
// tracestate headers.
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
// instead of the global provider (otel.GetMeterProvider).
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
	meters []*instruments // the configured (or global) meter's, then the ops server's
	log    *zap.Logger

	// The measurement attributes of publishes to the service's exchange,
	// built once.
	exchange string
	pubAttrs []metric.AddOption
	status   func(context.Context) (ConnectionStatus, error)
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
	t := &telemetry{tracer: tp.Tracer(InstrumentationName), prop: prop, log: log, exchange: orDefaultExchange(c.exchange), status: status}
	t.pubAttrs = exchangeAttrs(t.exchange)
	t.addMeter(mp)
	return t
}

func (t *telemetry) addMeter(mp metric.MeterProvider) {
	m := mp.Meter(InstrumentationName)
	in, err := newInstruments(m)
	if err == nil && t.status != nil {
		err = in.observe(m, t.status)
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
	spanAttrs []attribute.KeyValue  // set once the span records (cheaper than start options)
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
	rt.settled = func(error) { t.upDown(upInFlight, -1, rt.attrs) }
	return func(ctx context.Context, d *broker.Delivery) (err error) {
		rt.load()
		t.countRun(ctx, rt, d)
		ctx = t.prop.Extract(ctx, &headers{t: d.Headers})
		ctx, span := t.tracer.Start(ctx, rt.spanName, consumerOpts...)
		if span.IsRecording() {
			span.SetAttributes(rt.spanAttrs...)
		}
		t.upDown(upActive, 1, rt.attrs)
		t.upDown(upInFlight, 1, rt.attrs)
		if tr := actors.TrackerFrom(ctx); tr == nil || !tr.AfterSettle(rt.settled) {
			defer t.upDown(upInFlight, -1, rt.attrs)
		}
		start := time.Now()
		defer func() {
			v := recover()
			if v != nil {
				err = &actors.HandlerPanic{Value: v}
			}
			t.finishRun(ctx, rt, span, time.Since(start), err)
			if v != nil {
				panic(v)
			}
		}()
		return next(ctx, d)
	}
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

func (t *telemetry) finishRun(ctx context.Context, rt *routeTelemetry, span trace.Span, took time.Duration, err error) {
	res := rt.ok
	if err != nil {
		res = rt.fail
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetStatus(codes.Ok, "")
	}
	span.End()
	secs := took.Seconds()
	for _, m := range t.meters {
		m.duration.Record(ctx, secs, res...)
	}
	t.upDown(upActive, -1, rt.attrs)
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
	span  trace.Span
	attrs []metric.AddOption
}

// startPublish starts the PRODUCER span of a publish of key (without
// prefix) to exchange and writes its context into msg's headers (a copy).
func (t *telemetry) startPublish(ctx context.Context, exchange, key string, msg *amqp.Publishing) publishTrace {
	exchange = orDefaultExchange(exchange)
	attrs := t.pubAttrs
	if exchange != t.exchange {
		attrs = exchangeAttrs(exchange)
	}
	ctx, span := t.tracer.Start(ctx, key+" publish", producerOpts...)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String(attrSystem, "rabbitmq"),
			attribute.String(attrOperation, "publish"),
			attribute.String(attrDest, exchange),
			attribute.String(attrRoutingKey, key),
		)
	}
	h := headers{t: msg.Headers}
	t.prop.Inject(ctx, &h)
	msg.Headers = h.t
	return publishTrace{t: t, ctx: ctx, span: span, attrs: attrs}
}

// handed records a publish handed to the connection actor.
func (p publishTrace) handed() { p.t.count(cPublished, p.attrs) }

// finish records the publish's outcome and ends its span.
func (p publishTrace) finish(err error) {
	switch {
	case err == nil:
		p.t.count(cConfirmed, p.attrs)
		p.span.SetStatus(codes.Ok, "")
	case errors.Is(err, broker.ErrNacked):
		p.t.count(cNacked, p.attrs)
	case errors.Is(err, broker.ErrUnroutable):
		p.t.count(cReturned, p.attrs)
	}
	if err != nil {
		p.span.RecordError(err)
		p.span.SetStatus(codes.Error, err.Error())
	}
	p.span.End()
}

// deliveryEvent counts a dead-lettered or dropped message.
func (t *telemetry) deliveryEvent(e actors.DeliveryEvent) {
	opt := []metric.AddOption{metric.WithAttributes(attribute.String(attrRoute, e.Route))}
	switch e.Action {
	case actors.DeadLetter:
		t.count(cDeadLettered, []metric.AddOption{metric.WithAttributes(
			attribute.String(attrRoute, e.Route), attribute.String(attrReason, deadLetterReason(e.Err)))})
	case actors.Drop:
		t.count(cDropped, opt)
	}
}

// deadLetterReason classifies why a message was dead-lettered:
// undecodable (the envelope refused it), handler (the handler returned
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

// supervisorEvent counts restarts, give-ups and reconnections.
func (t *telemetry) supervisorEvent(e supervisorEventView, firstReady bool) {
	opt := []metric.AddOption{metric.WithAttributes(attribute.String(attrRoute, e.child))}
	switch {
	case e.kind == EventReady && e.child == "connection" && !firstReady:
		t.count(cReconnects, noAttrs)
	case e.child == "connection":
	case e.kind == EventRestarted || e.kind == EventRespawned:
		t.count(cRestarts, opt)
	case e.kind == EventGaveUp:
		t.count(cGiveUps, opt)
	}
}

type supervisorEventView struct {
	kind  EventKind
	child string
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

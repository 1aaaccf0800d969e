package hato

import (
	"context"
	"maps"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
)

// traceHeaderCases are traceparent and tracestate headers, valid or not,
// as a message may carry them.
var traceHeaderCases = []amqp.Table{
	nil,
	{},
	tomodachiHeaders,
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-04"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"},
	{"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-future"},
	{"traceparent": "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	{"traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	{"traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"},
	{"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},
	{"traceparent": "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	{"traceparent": []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1,b=2"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1 , b=2"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "not a list"},
	{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": []byte("a=1")},
	{"traceparent": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=1"},
	{"tracestate": "a=1"},
}

// The W3C fast path reads what propagation.TraceContext reads, and, with
// no span started, forwards exactly what it would write.
func TestW3CFastPathMatchesPropagator(t *testing.T) {
	for _, in := range traceHeaderCases {
		checkW3CFastPath(t, in, amqp.Table{"x-own": "kept"})
		checkW3CFastPath(t, in, nil)
	}
}

func FuzzW3CFastPath(f *testing.F) {
	for _, in := range traceHeaderCases {
		tp, _ := in["traceparent"].(string)
		ts, _ := in["tracestate"].(string)
		f.Add(tp, ts)
	}
	f.Fuzz(func(t *testing.T, tp, ts string) {
		checkW3CFastPath(t, amqp.Table{"traceparent": tp, "tracestate": ts}, nil)
	})
}

func checkW3CFastPath(t *testing.T, in, own amqp.Table) {
	t.Helper()
	prop := propagation.TraceContext{}
	want := trace.SpanContextFromContext(prop.Extract(context.Background(), &headers{t: in}))
	if got := extractW3C(in); !got.Equal(want) {
		t.Errorf("%v: extracted %v, want %v", in, got, want)
	}
	// Without a span: the incoming context, forwarded.
	ctx := withIncoming(context.Background(), in)
	if got := trace.SpanContextFromContext(ctx); !got.Equal(want) {
		t.Errorf("%v: context carries %v, want %v", in, got, want)
	}
	wantOut := headers{t: own}
	prop.Inject(trace.ContextWithSpanContext(context.Background(), want), &wantOut)
	msg := amqp.Publishing{Headers: own}
	injectW3C(ctx, &msg)
	if !maps.Equal(msg.Headers, wantOut.t) {
		t.Errorf("%v: forwarded %v, want %v", in, msg.Headers, wantOut.t)
	}
	if want.IsValid() && own != nil && len(own) != 1 {
		t.Errorf("the publisher's headers were changed: %v", own)
	}
	// With a span: its context, formatted.
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: want.TraceID(), SpanID: trace.SpanID{1, 2, 3},
		TraceFlags: want.TraceFlags(), TraceState: want.TraceState()})
	spanCtx := trace.ContextWithSpanContext(ctx, sc)
	wantOut = headers{t: own}
	prop.Inject(spanCtx, &wantOut)
	msg = amqp.Publishing{Headers: own}
	injectW3C(spanCtx, &msg)
	if !maps.Equal(msg.Headers, wantOut.t) {
		t.Errorf("%v: a child span's context written %v, want %v", in, msg.Headers, wantOut.t)
	}
}

// Spans are started only with a provider that may record: not a no-op
// one, nor the global one while no provider was set.
func TestSpansOnlyWithAProvider(t *testing.T) {
	tel := newTelemetry(&config{}, zap.NewNop(), nil)
	if tel.global == nil || tel.spans() {
		t.Fatalf("global provider unset: placeholder %v, spans %v", tel.global, tel.spans())
	}
	// As if otel.SetTracerProvider had been called since (the global
	// provider is no longer the placeholder the tracer came from).
	tel.global = &struct{ trace.TracerProvider }{}
	if !tel.spans() {
		t.Error("no spans once the global provider was set")
	}
	for _, tp := range []trace.TracerProvider{noop.NewTracerProvider(), trace.NewNoopTracerProvider()} { //nolint:staticcheck // a no-op provider still in use
		if tel := newTelemetry(&config{tracerProvider: tp}, zap.NewNop(), nil); tel.spans() {
			t.Errorf("%T: spans started", tp)
		}
	}
	sdk := sdktrace.NewTracerProvider()
	defer func() { _ = sdk.Shutdown(context.Background()) }()
	if tel := newTelemetry(&config{tracerProvider: sdk}, zap.NewNop(), nil); !tel.spans() || tel.global != nil {
		t.Error("an SDK provider starts no spans")
	}
}

// Publishes of the same key share their span name and attributes; past
// maxCached keys, they are built for each publish.
func TestPublishKeys(t *testing.T) {
	tel := newTelemetry(&config{exchange: "ex"}, zap.NewNop(), nil)
	a := tel.publishKey("", "k")
	if b := tel.publishKey("amq.topic", "k"); a != b || a.spanName != "k publish" {
		t.Errorf("same key: %p %p %q", a, b, a.spanName)
	}
	if c := tel.publishKey("other", "k"); c == a || attrMap(c.spanAttrs)[attrDest] != "other" {
		t.Errorf("another exchange: %+v", c)
	}
	if d := tel.publishKey("ex", "k"); &d.attrs[0] != &tel.pubAttrs[0] {
		t.Error("the service's exchange's measurement attributes not shared")
	}
	for i := range 2 * maxCached {
		tel.publishKey("", string(rune('a'+i)))
	}
	if n := len(*tel.pubKeys.m.Load()); n != maxCached {
		t.Errorf("%d keys kept, want %d", n, maxCached)
	}
}

// The incoming trace context is the current span of one context value
// that answers every other key as its parent does, and is cancelled with
// it.
func TestIncomingContext(t *testing.T) {
	if spanKey == nil {
		t.Fatal("trace.SpanFromContext's key not captured")
	}
	type key struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
	ctx := withIncoming(parent, tomodachiHeaders)
	in, ok := ctx.(*incomingCtx)
	if !ok || trace.SpanFromContext(ctx) != trace.Span(&in.span) {
		t.Fatalf("context %T, span %T", ctx, trace.SpanFromContext(ctx))
	}
	if ctx.Value(key{}) != "v" {
		t.Error("parent's value lost")
	}
	child, stop := context.WithCancel(ctx)
	defer stop()
	cancel()
	<-child.Done()
	if withIncoming(parent, amqp.Table{}) != parent {
		t.Error("a context without trace context wrapped")
	}
}

// Dead-letter, drop and restart counts carry the route (and the reason),
// their options built once per route and reason.
func TestEventAttributes(t *testing.T) {
	h := newTelHarness(t)
	tel := h.svc.tel
	for range 2 {
		tel.deliveryEvent(actors.DeliveryEvent{Route: "r", Action: actors.DeadLetter, Err: &DecodeError{}})
		tel.deliveryEvent(actors.DeliveryEvent{Route: "r", Action: actors.Drop})
		tel.supervisorEvent(supervisorEventView{kind: EventRestarted, child: "r"}, false)
	}
	if a, b := tel.eventAttrs("r", ""), tel.eventAttrs("r", ""); &a[0] != &b[0] {
		t.Error("options built again")
	}
	// Issue 19: a route's event counts carry the labels its message
	// counts carry (code.function, routing key, exchange), not hato.route
	// alone.
	tel.nameRoute("r2", newRouteTelemetry("", routeConfig{routingKey: "orders.created", handlerName: "onOrder"}))
	tel.deliveryEvent(actors.DeliveryEvent{Route: "r2", Action: actors.DeadLetter, Err: &DecodeError{}})
	m := h.metrics(t)
	var labelled bool
	for _, dp := range m["hato.messages.dead_lettered"].(metricdata.Sum[int64]).DataPoints {
		if v, ok := dp.Attributes.Value(attrFunction); ok && v.AsString() == "onOrder" {
			rk, _ := dp.Attributes.Value(attrRoutingKey)
			labelled = rk.AsString() == "orders.created"
		}
	}
	if !labelled {
		t.Errorf("dead_lettered of a named route lacks code.function and the routing key: %+v", m["hato.messages.dead_lettered"])
	}
	for name, want := range map[string]map[string]string{
		"hato.messages.dead_lettered": {attrRoute: "r", attrReason: "undecodable"},
		"hato.messages.dropped":       {attrRoute: "r"},
		"hato.route.restarts":         {attrRoute: "r"},
	} {
		sum, ok := m[name].(metricdata.Sum[int64])
		var dp *metricdata.DataPoint[int64]
		for i := range sum.DataPoints {
			if v, _ := sum.DataPoints[i].Attributes.Value(attrRoute); v.AsString() == "r" {
				dp = &sum.DataPoints[i]
			}
		}
		if !ok || dp == nil || dp.Value != 2 {
			t.Fatalf("%s = %+v, want a series of 2 for route r", name, m[name])
		}
		wantAttrs(t, name, dp.Attributes.ToSlice(), want)
	}
}

// Measurements are made only with a meter provider that may record them:
// not a no-op one, nor the global one while no provider was set; the ops
// server's meter measures.
func TestMeteredOnlyWithAProvider(t *testing.T) {
	tel := newTelemetry(&config{}, zap.NewNop(), nil)
	if tel.meters[0].global == nil || tel.metered() {
		t.Fatalf("global provider unset: placeholder %v, metered %v", tel.meters[0].global, tel.metered())
	}
	// As if otel.SetMeterProvider had been called since.
	tel.meters[0].global = &struct{ metric.MeterProvider }{}
	if !tel.metered() {
		t.Error("not metered once the global provider was set")
	}
	if tel := newTelemetry(&config{meterProvider: metricnoop.NewMeterProvider()}, zap.NewNop(), nil); tel.metered() {
		t.Error("a no-op provider is metered")
	}
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(context.Background()) }()
	tel = newTelemetry(&config{}, zap.NewNop(), nil)
	if tel.addMeter(mp); !tel.metered() {
		t.Error("the ops server's meter does not measure")
	}
}

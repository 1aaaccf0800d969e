package hato

import (
	"context"
	"errors"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// tomodachi's instrumentation writes the trace context with OpenTelemetry's
// W3C TraceContextTextMapPropagator into a dict of str, which aio-pika
// sends as AMQP long strings: this is that dict, as amqp091-go decodes it.
var tomodachiHeaders = amqp.Table{
	"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"tracestate":  "congo=t61rcWkgMzE",
}

const (
	tomodachiTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tomodachiSpanID  = "00f067aa0ba902b7"
)

type telHarness struct {
	svc    *Service
	spans  *tracetest.InMemoryExporter
	reader *sdkmetric.ManualReader
}

func newTelHarness(t *testing.T, opts ...Option) *telHarness {
	t.Helper()
	h := &telHarness{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	svc, err := New("tel-svc", append([]Option{WithURL("amqp://guest:guest@127.0.0.1:1/"),
		WithTracerProvider(tp), WithMeterProvider(mp)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	return h
}

// deliver runs route i's traced handler on a JSON message with headers,
// as the consumer actor does.
func (h *telHarness) deliver(t *testing.T, i int, headers amqp.Table, data any) error {
	t.Helper()
	body, err := envelope.JSON.Build(envelope.Build{Service: envelope.Service{Name: "sender"},
		Topic: "orders.created", MessageUUID: "m-1", Time: time.Now()}, data, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &broker.Delivery{Delivery: amqp.Delivery{Headers: headers, Body: body, Exchange: "amq.topic",
		RoutingKey: "orders.created", MessageId: "m-1"}}
	return h.svc.routeHandler(h.svc.routes[i])(context.Background(), d)
}

func (h *telHarness) metrics(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != InstrumentationName {
			t.Errorf("meter %q, want %q", sm.Scope.Name, InstrumentationName)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

func wantAttrs(t *testing.T, what string, got []attribute.KeyValue, want map[string]string) {
	t.Helper()
	g := attrMap(got)
	if len(g) != len(want) {
		t.Errorf("%s: attributes %v, want exactly %v", what, g, want)
	}
	for k, v := range want {
		if g[k] != v {
			t.Errorf("%s: %s = %q, want %q", what, k, g[k], v)
		}
	}
}

// What tomodachi writes is what hato reads, and what hato writes is what
// tomodachi reads: string values, the W3C format, tracestate only when set.
func TestTraceHeadersTomodachiFormat(t *testing.T) {
	tel := newTelemetry(&config{}, zap.NewNop(), nil)
	ctx := tel.prop.Extract(context.Background(), &headers{t: tomodachiHeaders})
	sc := trace.SpanContextFromContext(ctx)
	if sc.TraceID().String() != tomodachiTraceID || sc.SpanID().String() != tomodachiSpanID ||
		!sc.IsSampled() || !sc.IsRemote() || sc.TraceState().String() != "congo=t61rcWkgMzE" {
		t.Fatalf("extracted %v (tracestate %q)", sc, sc.TraceState().String())
	}

	// Reverse: hato's headers, decoded as tomodachi's extractor reads a
	// dict of str.
	h := headers{}
	tel.prop.Inject(ctx, &h)
	if len(h.t) != 2 {
		t.Fatalf("injected %v, want traceparent and tracestate", h.t)
	}
	for k, want := range tomodachiHeaders {
		if got, ok := h.t[k].(string); !ok || got != want {
			t.Errorf("header %s = %#v (%T), want the string %q", k, h.t[k], h.t[k], want)
		}
	}
	noState := trace.NewSpanContext(trace.SpanContextConfig{TraceID: sc.TraceID(), SpanID: sc.SpanID(), TraceFlags: trace.FlagsSampled})
	h = headers{}
	tel.prop.Inject(trace.ContextWithSpanContext(context.Background(), noState), &h)
	if _, ok := h.t["tracestate"]; ok || len(h.t) != 1 {
		t.Errorf("empty tracestate written: %v", h.t)
	}

	// A byte-array header (amqp091-go's []byte) is ignored, as tomodachi
	// ignores it.
	bytesCtx := tel.prop.Extract(context.Background(), &headers{t: amqp.Table{"traceparent": []byte(tomodachiHeaders["traceparent"].(string))}})
	if trace.SpanContextFromContext(bytesCtx).IsValid() {
		t.Error("a byte-array traceparent was read")
	}
}

// A message with a traceparent is handled in a CONSUMER span, child of the
// incoming context, named and attributed as tomodachi's; the handler's
// publish is a PRODUCER span whose context goes into the forwarded
// message's headers; an error is recorded; metrics count every run.
func TestConsumerAndProducerSpans(t *testing.T) {
	h := newTelHarness(t)
	var forwarded amqp.Table
	var handlerSpan trace.SpanContext
	fail := errors.New("boom")
	if err := Subscribe(h.svc, "orders.*", func(ctx context.Context, msg *Message[map[string]any]) error {
		handlerSpan = trace.SpanContextFromContext(ctx)
		if msg.Data["fail"] == true {
			return fail
		}
		pub := amqp.Publishing{Headers: amqp.Table{"x-own": "kept"}}
		pt := h.svc.tel.startPublish(ctx, "", "orders.forwarded", &pub)
		pt.handed()
		pt.finish(nil)
		forwarded = pub.Headers
		return nil
	}, HandlerName("on_order")); err != nil {
		t.Fatal(err)
	}
	if err := h.deliver(t, 0, tomodachiHeaders, map[string]any{"n": 1}); err != nil {
		t.Fatal(err)
	}
	consumerSC := handlerSpan
	if err := h.deliver(t, 0, tomodachiHeaders, map[string]any{"fail": true}); !errors.Is(err, fail) {
		t.Fatalf("handler error %v", err)
	}

	spans := h.spans.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3 (process, publish, process)", len(spans))
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartTime.Before(spans[j].StartTime) })
	proc, pub, failed := spans[0], spans[1], spans[2]
	if spans[0].Name == "orders.forwarded publish" { // ended first, started second
		proc, pub = spans[1], spans[0]
	}
	procAttrs := map[string]string{"messaging.system": "rabbitmq", "messaging.operation": "process",
		"messaging.destination.name": "amq.topic", "messaging.rabbitmq.destination.routing_key": "orders.*",
		"code.function": "on_order"}
	for _, s := range []tracetest.SpanStub{proc, failed} {
		if s.Name != "orders.* process" || s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span %q kind %v, want \"orders.* process\" consumer", s.Name, s.SpanKind)
		}
		if s.Parent.SpanID().String() != tomodachiSpanID || s.SpanContext.TraceID().String() != tomodachiTraceID {
			t.Errorf("span %q: parent %s trace %s, want the incoming context", s.Name, s.Parent.SpanID(), s.SpanContext.TraceID())
		}
		wantAttrs(t, s.Name, s.Attributes, procAttrs)
	}
	if proc.SpanContext.SpanID() != consumerSC.SpanID() {
		t.Error("the handler's ctx does not carry the consumer span")
	}
	if proc.Status.Code != codes.Ok {
		t.Errorf("successful run: status %v", proc.Status)
	}
	if failed.Status.Code != codes.Error || len(failed.Events) != 1 || failed.Events[0].Name != "exception" {
		t.Errorf("failed run: status %v, events %v; want error status and an exception event", failed.Status, failed.Events)
	}
	if pub.Name != "orders.forwarded publish" || pub.SpanKind != trace.SpanKindProducer || pub.Parent.SpanID() != proc.SpanContext.SpanID() {
		t.Errorf("publish span %q kind %v parent %s, want a producer span, child of the consumer span", pub.Name, pub.SpanKind, pub.Parent.SpanID())
	}
	wantAttrs(t, pub.Name, pub.Attributes, map[string]string{"messaging.system": "rabbitmq", "messaging.operation": "publish",
		"messaging.destination.name": "amq.topic", "messaging.rabbitmq.destination.routing_key": "orders.forwarded"})

	tp, ok := forwarded["traceparent"].(string)
	want := "00-" + tomodachiTraceID + "-" + pub.SpanContext.SpanID().String() + "-01"
	if !ok || tp != want {
		t.Errorf("forwarded traceparent %#v, want the string %q", forwarded["traceparent"], want)
	}
	if forwarded["tracestate"] != "congo=t61rcWkgMzE" || forwarded["x-own"] != "kept" {
		t.Errorf("forwarded headers %v", forwarded)
	}
	checkRunMetrics(t, h.metrics(t))
}

func checkRunMetrics(t *testing.T, m map[string]metricdata.Aggregation) {
	t.Helper()
	dur, ok := m["messaging.rabbitmq.duration"].(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("no duration histogram in %v", keys(m))
	}
	bySuccess := map[string]uint64{}
	for _, dp := range dur.DataPoints {
		a := attrMap(dp.Attributes.ToSlice())
		bySuccess[a["function.success"]] += dp.Count
		wantAttrs(t, "duration", dp.Attributes.ToSlice(), map[string]string{"messaging.destination.name": "amq.topic",
			"messaging.rabbitmq.destination.routing_key": "orders.*", "code.function": "on_order", "function.success": a["function.success"]})
	}
	if bySuccess["true"] != 1 || bySuccess["false"] != 1 {
		t.Errorf("durations by success %v, want one each", bySuccess)
	}
	for _, name := range []string{"messaging.rabbitmq.active_tasks", "hato.route.in_flight"} {
		sum, ok := m[name].(metricdata.Sum[int64])
		if !ok || len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 0 || sum.IsMonotonic {
			t.Errorf("%s = %+v, want one up-down series back at 0", name, m[name])
		}
	}
	for name, want := range map[string]int64{"hato.messages.published": 1, "hato.messages.confirmed": 1} {
		if got := sumOf(m[name]); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func sumOf(a metricdata.Aggregation) int64 {
	s, _ := a.(metricdata.Sum[int64])
	var n int64
	for _, dp := range s.DataPoints {
		n += dp.Value
	}
	return n
}

func keys(m map[string]metricdata.Aggregation) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// With nothing configured (the global no-op providers) trace context still
// passes through: the forwarded message carries the incoming trace, parented
// on the incoming span.
func TestTraceContextPropagatesWithoutSDK(t *testing.T) {
	svc, err := New("plain", WithURL("amqp://guest:guest@127.0.0.1:1/"))
	if err != nil {
		t.Fatal(err)
	}
	var forwarded amqp.Table
	var userCarrier propagation.MapCarrier
	if err := Subscribe(svc, "k", func(ctx context.Context, msg *Message[any]) error {
		pub := amqp.Publishing{}
		svc.tel.startPublish(ctx, "", "next", &pub).finish(nil)
		forwarded = pub.Headers
		// The handler's own code (an HTTP call, say) propagates the same
		// context with OpenTelemetry's propagator.
		userCarrier = propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, userCarrier)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h := &telHarness{svc: svc}
	if err := h.deliver(t, 0, tomodachiHeaders, 1); err != nil {
		t.Fatal(err)
	}
	if forwarded["traceparent"] != tomodachiHeaders["traceparent"] {
		t.Errorf("forwarded %v, want the incoming traceparent", forwarded)
	}
	if userCarrier["traceparent"] != tomodachiHeaders["traceparent"] {
		t.Errorf("the handler's context injected %v, want the incoming traceparent", userCarrier)
	}
	// Without an incoming context, nothing is written (and the table not
	// allocated).
	forwarded = amqp.Table{"sentinel": true}
	if err := h.deliver(t, 0, nil, 1); err != nil {
		t.Fatal(err)
	}
	if forwarded != nil {
		t.Errorf("headers %v written without a trace", forwarded)
	}
}

// A handler's logger carries the trace and span ids.
func TestMessageLoggerTraceFields(t *testing.T) {
	h := newTelHarness(t)
	var fields []string
	if err := Subscribe(h.svc, "k", func(ctx context.Context, msg *Message[any]) error {
		for _, f := range TraceFields(ctx) {
			fields = append(fields, f.Key+"="+f.String)
		}
		msg.Logger().Info("handled") // must not panic with the nop logger
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.deliver(t, 0, tomodachiHeaders, 1); err != nil {
		t.Fatal(err)
	}
	spans := h.spans.GetSpans()
	if len(spans) != 1 || len(fields) != 2 {
		t.Fatalf("spans %d, fields %v", len(spans), fields)
	}
	want := "trace_id=" + tomodachiTraceID + ",span_id=" + spans[0].SpanContext.SpanID().String()
	if got := strings.Join(fields, ","); got != want {
		t.Errorf("fields %s, want %s", got, want)
	}
}

func TestDeadLetterReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&DecodeError{Err: errors.New("bad")}, "undecodable"},
		// Issue 19: a validator's refusal has its own reason.
		{&DecodeError{Err: errors.Join(envelope.ErrValidation, errors.New("amount"))}, "invalid"},
		{DeadLetter(errors.New("no")), "handler"},
		{errors.New("failed 3 attempts: boom"), "attempts"},
		{errors.New("requeued 6 times: x"), "redeliveries"},
		{errors.New("poison message: crashed or requeued 6 times (limit 5)"), "redeliveries"},
		{errors.New("something"), "other"},
		{nil, "other"},
	} {
		if got := deadLetterReason(tc.err); got != tc.want {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.want)
		}
	}
}

// The probes answer before start: alive, not ready (503 with a JSON
// reason); an ops address is validated; HATO_OPS_ADDR sets one.
func TestOpsProbesBeforeStart(t *testing.T) {
	svc, err := New("probe", WithURL("amqp://guest:guest@127.0.0.1:1/"))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 404} {
		rec := httptest.NewRecorder()
		svc.OpsHandler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
		if path == "/readyz" && !strings.Contains(rec.Body.String(), `"reason":"hato: not ready: not started"`) {
			t.Errorf("readyz body %s", rec.Body.String())
		}
	}
	if !errors.Is(svc.Ready(), ErrNotReady) || svc.Healthy() != nil {
		t.Errorf("Ready %v, Healthy %v", svc.Ready(), svc.Healthy())
	}
	if _, err := New("probe", WithOpsServer("no-port")); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("bad ops address: %v", err)
	}
	t.Setenv("HATO_OPS_ADDR", "127.0.0.1:0")
	svc, err = New("probe", WithURL("amqp://guest:guest@127.0.0.1:1/"))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	svc.OpsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Errorf("/metrics with HATO_OPS_ADDR: %d", rec.Code)
	}
}

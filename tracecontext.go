package hato

import (
	"context"
	"encoding/hex"
	"maps"
	"reflect"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"
)

// W3C Trace Context in message headers, read and written here when the
// propagator is the default propagation.TraceContext: exactly what it
// reads and writes, without a carrier, and without formatting again a
// traceparent that passes through unchanged.
const (
	traceparentHeader = "traceparent"
	tracestateHeader  = "tracestate"
)

// neverRecords reports whether tp is a no-op tracer provider, whose
// tracers' spans only carry their parent's span context.
func neverRecords(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return true
	}
	return reflect.TypeOf(tp) == legacyNoop
}

// legacyNoop is the type of trace.NewNoopTracerProvider's provider.
var legacyNoop = reflect.TypeOf(trace.NewNoopTracerProvider()) //nolint:staticcheck // recognised, not used

// isGlobalPlaceholder reports whether tp is the provider otel's global
// one is until otel.SetTracerProvider: it delegates to the provider set
// then, and until then its spans only carry their parent's span context.
func isGlobalPlaceholder(tp trace.TracerProvider) bool {
	t := reflect.TypeOf(tp)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == otelGlobalPkg
}

// spans reports whether a message's spans are to be started: not with a
// no-op tracer provider, nor with the global one while no other provider
// was set with otel.SetTracerProvider (or a no-op one was). Those spans
// would record nothing, and carry their parent's span context, which the
// message's context carries already.
func (t *telemetry) spans() bool {
	if t.never {
		return false
	}
	if t.global == nil {
		return true
	}
	g := otel.GetTracerProvider()
	return g != t.global && !neverRecords(g)
}

// incomingSpan is the trace context a message came with, as the current
// span of its handler's context when no span is started, and as the
// parent of the CONSUMER span otherwise: its span context, and the
// message's header values, forwarded as they are when they are what
// formatting the span context would write.
type incomingSpan struct {
	embedded.Span
	sc            trace.SpanContext
	parent, state any // the message's traceparent and tracestate
}

// incomingSpan is a non-recording span (as noop.Span, whose span context
// cannot be set).
func (s *incomingSpan) SpanContext() trace.SpanContext        { return s.sc }
func (*incomingSpan) IsRecording() bool                       { return false }
func (*incomingSpan) SetStatus(codes.Code, string)            {}
func (*incomingSpan) SetAttributes(...attribute.KeyValue)     {}
func (*incomingSpan) End(...trace.SpanEndOption)              {}
func (*incomingSpan) RecordError(error, ...trace.EventOption) {}
func (*incomingSpan) AddEvent(string, ...trace.EventOption)   {}
func (*incomingSpan) AddLink(trace.Link)                      {}
func (*incomingSpan) SetName(string)                          {}
func (*incomingSpan) TracerProvider() trace.TracerProvider    { return otel.GetTracerProvider() }

// headers are the traceparent and tracestate (nil: none) forwarding s.
func (s *incomingSpan) headers() (parent, state any) {
	// A valid version 00 traceparent without a trailing '-' is written
	// back as it is (its hex is lower case, its flags at most 3).
	if raw := s.parent.(string); len(raw) == traceparentLen && raw[:2] == "00" {
		parent = s.parent
	} else {
		parent = formatTraceparent(s.sc)
	}
	if s.sc.TraceState().Len() > 0 {
		state = s.state
		if ts := s.sc.TraceState().String(); ts != s.state {
			state = ts
		}
	}
	return parent, state
}

// incomingCtx is a context whose current span is an incomingSpan: one
// allocation instead of the span's and context.WithValue's.
type incomingCtx struct {
	context.Context
	span incomingSpan
}

func (c *incomingCtx) Value(key any) any {
	if key == spanKey {
		return &c.span
	}
	return c.Context.Value(key)
}

// spanKey is the key trace.ContextWithSpan stores the current span under,
// which trace.SpanFromContext asks a context for (nil if it did not).
var spanKey = func() any {
	var k keySpy
	trace.SpanFromContext(&k)
	return k.key
}()

type keySpy struct {
	context.Context
	key any
}

func (k *keySpy) Value(key any) any {
	k.key = key
	return nil
}

// withIncoming returns ctx carrying the trace context of a message's
// headers h as its current span, if they carry a valid one.
func withIncoming(ctx context.Context, h amqp.Table) context.Context {
	sc := extractW3C(h)
	if !sc.IsValid() {
		return ctx
	}
	c := &incomingCtx{Context: ctx, span: incomingSpan{sc: sc, parent: h[traceparentHeader], state: h[tracestateHeader]}}
	if spanKey == nil {
		return trace.ContextWithSpan(ctx, &c.span)
	}
	return c
}

// injectW3C writes the trace context of ctx's span into msg's headers (a
// copy, made once), as propagation.TraceContext.Inject does.
func injectW3C(ctx context.Context, msg *amqp.Publishing) {
	span := trace.SpanFromContext(ctx)
	sc := span.SpanContext()
	if !sc.IsValid() {
		return
	}
	var parent, state any
	if in, ok := span.(*incomingSpan); ok {
		parent, state = in.headers()
	} else {
		parent = formatTraceparent(sc)
		if ts := sc.TraceState().String(); ts != "" {
			state = ts
		}
	}
	h := make(amqp.Table, len(msg.Headers)+2)
	maps.Copy(h, msg.Headers)
	h[traceparentHeader] = parent
	if state != nil {
		h[tracestateHeader] = state
	}
	msg.Headers = h
}

// traceparentLen is the length of a version 00 traceparent.
const traceparentLen = 2 + 1 + 32 + 1 + 16 + 1 + 2

// formatTraceparent is sc's traceparent as propagation.TraceContext
// writes it: version 00, the sampled and random flags.
func formatTraceparent(sc trace.SpanContext) string {
	var buf [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	flags := [1]byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))}
	buf[0], buf[1], buf[2], buf[35], buf[52] = '0', '0', '-', '-', '-'
	hex.Encode(buf[3:35], tid[:])
	hex.Encode(buf[36:52], sid[:])
	hex.Encode(buf[53:55], flags[:])
	return string(buf[:])
}

// extractW3C reads the trace context of a message's headers h as
// propagation.TraceContext.Extract does: a traceparent of version 00 (or
// a later one, its extra fields ignored), lower-case hex, the sampled and
// random flags kept; the tracestate if it parses; values other than
// strings ignored. The span context is remote; invalid if there is none.
func extractW3C(h amqp.Table) trace.SpanContext {
	tp, _ := h[traceparentHeader].(string)
	if tp == "" {
		return trace.SpanContext{}
	}
	var ver, opts [1]byte
	var scc trace.SpanContextConfig
	if !hexPart(ver[:], &tp) || ver[0] == 0xff || !hexPart(scc.TraceID[:], &tp) ||
		!hexPart(scc.SpanID[:], &tp) || !hexPart(opts[:], &tp) || ver[0] == 0 && (tp != "" || opts[0] > 3) {
		return trace.SpanContext{}
	}
	scc.TraceFlags = trace.TraceFlags(opts[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	ts, _ := h[tracestateHeader].(string)
	scc.TraceState, _ = trace.ParseTraceState(ts)
	scc.Remote = true
	sc := trace.NewSpanContext(scc)
	if !sc.IsValid() {
		return trace.SpanContext{}
	}
	return sc
}

// hexPart decodes the next '-'-separated field of *h into dst: exactly
// 2*len(dst) lower-case hex digits.
func hexPart(dst []byte, h *string) bool {
	part, rest, _ := strings.Cut(*h, "-")
	*h = rest
	if len(part) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, lo := unhex[part[2*i]], unhex[part[2*i+1]]
		if hi|lo > 0xf {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

// unhex is the value of a lower-case hex digit, 0xff for other bytes.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

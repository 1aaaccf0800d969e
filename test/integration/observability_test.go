//go:build integration

package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/netproxy"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// poll waits until cond holds, failing the test after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A message published with tomodachi's trace headers through a forwarding
// node, on the real broker: the node's consumer span is a child of the
// incoming context, its publish a child of that, and the forwarded message
// carries the trace in string headers; the node's metrics count every
// message.
func TestTraceThroughForwarder(t *testing.T) {
	const n = 5
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	in, out := testutil.Key(t, "in"), testutil.Key(t, "out")

	node := newService(t, "forwarder", hato.WithTracerProvider(tp), hato.WithMeterProvider(mp))
	mustSubscribe(t, node, in, func(ctx context.Context, msg *hato.Message[payload]) error {
		return node.Publish(ctx, msg.Data, out)
	}, hato.HandlerName("forward"))
	testutil.Start(t, node)

	var mu sync.Mutex
	var got []amqp.Table
	sink := newService(t, "sink")
	mustSubscribe(t, sink, out, func(ctx context.Context, msg *hato.Message[payload]) error {
		mu.Lock()
		got = append(got, msg.Properties.Headers)
		mu.Unlock()
		return nil
	})
	testutil.Start(t, sink)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	p := publisher(t)
	publishN(t, p, in, fmtIDs("m", n), hato.Headers(amqp.Table{"traceparent": "00-" + traceID + "-" + parentID + "-01"}))
	poll(t, 30*time.Second, "forwarded messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	poll(t, 10*time.Second, "spans", func() bool { return len(spans.GetSpans()) == 2*n })

	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans.GetSpans() {
		byID[s.SpanContext.SpanID()] = s
	}
	mu.Lock()
	defer mu.Unlock()
	for _, h := range got {
		tp, ok := h["traceparent"].(string)
		parts := strings.Split(tp, "-")
		if !ok || len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("forwarded traceparent %#v (%T), want a string in trace %s", h["traceparent"], h["traceparent"], traceID)
		}
		sid, _ := trace.SpanIDFromHex(parts[2])
		pub, ok := byID[sid]
		if !ok || pub.Name != out+" publish" || pub.SpanKind != trace.SpanKindProducer {
			t.Fatalf("forwarded parent %s is not the node's publish span (%q)", parts[2], pub.Name)
		}
		proc, ok := byID[pub.Parent.SpanID()]
		if !ok || proc.Name != in+" process" || proc.SpanKind != trace.SpanKindConsumer {
			t.Fatalf("publish span's parent is %q, want the consumer span", proc.Name)
		}
		if proc.Parent.SpanID().String() != parentID || !proc.Parent.IsRemote() || proc.SpanContext.TraceID().String() != traceID {
			t.Errorf("consumer span's parent %s, want the incoming %s", proc.Parent.SpanID(), parentID)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					counts[m.Name] += int64(dp.Count)
				}
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					counts[m.Name] += dp.Value
				}
			case metricdata.Gauge[int64]:
				counts[m.Name+" (observed)"] = int64(len(d.DataPoints))
			}
		}
	}
	// Confirms may land after the sink saw the messages.
	want := map[string]int64{"messaging.rabbitmq.duration": n, "messaging.rabbitmq.active_tasks": 0,
		"hato.messages.published": n, "hato.publish.unconfirmed (observed)": 1, "hato.publish.buffered (observed)": 1}
	for name, w := range want {
		if counts[name] != w {
			t.Errorf("%s = %d, want %d (all: %v)", name, counts[name], w, counts)
		}
	}
}

// proxiedURL is the package vhost's URL through p.
func proxiedURL(t *testing.T) (string, *netproxy.Proxy) {
	t.Helper()
	uri, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := netproxy.New(net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u, err := url.Parse(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return u.String(), p
}

func probe(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// The ops endpoint: /readyz goes 503 with a JSON reason while the node is
// cut off from the broker and 200 again after it reconnected; /healthz
// stays 200; /metrics parses as Prometheus text and has hato's metrics.
func TestOpsEndpoint(t *testing.T) {
	proxied, p := proxiedURL(t)
	key := testutil.Key(t, "ops")
	svc := newService(t, "ops", hato.WithURL(proxied), hato.WithOpsServer("127.0.0.1:0"),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}))
	handled := testutil.NewCollector()
	mustSubscribe(t, svc, key, func(ctx context.Context, msg *hato.Message[payload]) error {
		handled.Add(msg.Data.ID)
		return nil
	}, hato.HandlerName("on_ops"))
	testutil.Start(t, svc)
	addr := svc.OpsAddr()
	if addr == "" {
		t.Fatal("no ops address")
	}
	if code, body := probe(t, addr, "/readyz"); code != 200 {
		t.Fatalf("readyz after start: %d %s", code, body)
	}

	p.SetRefuse(true)
	p.CutAll()
	poll(t, 30*time.Second, "readyz 503", func() bool { code, _ := probe(t, addr, "/readyz"); return code == 503 })
	_, body := probe(t, addr, "/readyz")
	var reason struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(body), &reason); err != nil || reason.Status != "unavailable" || reason.Reason == "" {
		t.Errorf("readyz body %q: want JSON with status unavailable and a reason (%v)", body, err)
	}
	if code, body := probe(t, addr, "/healthz"); code != 200 {
		t.Errorf("healthz while disconnected: %d %s", code, body)
	}

	p.SetRefuse(false)
	poll(t, 30*time.Second, "readyz 200 after recovery", func() bool { code, _ := probe(t, addr, "/readyz"); return code == 200 })

	pub := publisher(t)
	publishN(t, pub, key, fmtIDs("o", 3))
	handled.WaitDistinct(t, 3, 30*time.Second)

	code, text := probe(t, addr, "/metrics")
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("metrics do not parse: %v\n%s", err, text)
	}
	dur := families["messaging_rabbitmq_duration_seconds"]
	if dur == nil {
		t.Fatalf("no messaging_rabbitmq_duration_seconds in %d families", len(families))
	}
	var count uint64
	for _, m := range dur.GetMetric() {
		count += m.GetHistogram().GetSampleCount()
	}
	if count != 3 {
		t.Errorf("duration count %d, want 3", count)
	}
	if rc := families["hato_connection_reconnects_total"]; rc == nil || rc.GetMetric()[0].GetCounter().GetValue() < 1 {
		t.Errorf("reconnects not counted: %v", rc)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Sync() error { return nil }

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// jsonKeys returns the top-level keys of a JSON object in order, repeats
// included.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
	}
	return keys
}

// Issue 19: "handler failed; retrying" and "message dead-lettered" held the
// keys route and routing_key twice; a dead-lettered message was logged at
// error level with a stack trace of hato's and protoactor's internals; at
// shutdown protoactor's "[DeadLetter]" lines came out at info.
func TestRetryAndDeadLetterLogLines(t *testing.T) {
	buf := &lockedBuffer{}
	// As zap.NewProduction, which Run uses: JSON, stack traces from error.
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zap.InfoLevel),
		zap.AddStacktrace(zap.ErrorLevel))
	key := testutil.Key(t, "logs")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "logs", hato.WithLogger(log), hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		return errors.New("always fails")
	}, hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 2, Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}}))
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"bad"})
	brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() >= 1 }, "dead-lettered")
	testutil.Stop(t, svc)

	seen := map[string]bool{}
	for _, line := range buf.lines() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		msg, _ := rec["msg"].(string)
		seen[msg] = true
		keys := jsonKeys(t, line)
		dup := map[string]bool{}
		for _, k := range keys {
			if dup[k] {
				t.Errorf("%q holds the key %q twice: %s", msg, k, line)
			}
			dup[k] = true
		}
		if msg == "message dead-lettered" && (rec["level"] != "warn" || rec["stacktrace"] != nil) {
			t.Errorf("dead-lettered line at %v with stack %v, want warn without a stack", rec["level"], rec["stacktrace"] != nil)
		}
		if strings.HasPrefix(msg, "[DeadLetter]") {
			t.Errorf("protoactor's dead-letter line at %v: %s", rec["level"], line)
		}
	}
	for _, want := range []string{"handler failed; retrying", "message dead-lettered"} {
		if !seen[want] {
			t.Errorf("no %q line in\n%s", want, strings.Join(buf.lines(), "\n"))
		}
	}
}

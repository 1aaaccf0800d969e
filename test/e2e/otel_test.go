//go:build integration

package e2e

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	colmetric "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/test/brokertest"
)

// collector is a minimal OTLP/HTTP receiver (protobuf encoding, what the
// Go exporters send): it keeps the spans, the metric names and the
// resource attributes it is sent, and counts the metrics exports.
type collector struct {
	mu             sync.Mutex
	spans          []*tracepb.Span
	metrics        map[string]bool
	metricsExports int
	resource       map[string]string
	addr           string
}

func startCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{metrics: map[string]bool{}, resource: map[string]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", func(w http.ResponseWriter, r *http.Request) {
		var req coltrace.ExportTraceServiceRequest
		if !decodeOTLP(w, r, &req) {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				c.resource[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				c.spans = append(c.spans, ss.GetSpans()...)
			}
		}
	})
	mux.HandleFunc("/v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		var req colmetric.ExportMetricsServiceRequest
		if !decodeOTLP(w, r, &req) {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.metricsExports++
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					c.metrics[m.GetName()] = true
				}
			}
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return c
}

func decodeOTLP(w http.ResponseWriter, r *http.Request, m proto.Message) bool {
	b, err := io.ReadAll(r.Body)
	if err == nil {
		err = proto.Unmarshal(b, m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return false
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
	return true
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls the node's /readyz until it answers 200.
func waitReady(t *testing.T, ops string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for code, _ := get(ops, "/readyz"); code != 200; code, _ = get(ops, "/readyz") {
		if time.Now().After(deadline) {
			t.Fatalf("readyz never 200: %d", code)
		}
		time.Sleep(50 * time.Millisecond) // an external process: poll its endpoint
	}
}

func get(addr, path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// The example node, switched on from the standard environment, exports
// the trace of one message with OTLP/HTTP: its consumer span is a child of
// the traceparent the message came with, its publish span a child of that,
// and the response carries the trace on; /readyz and /metrics answer.
func TestExampleNodeExportsTrace(t *testing.T) {
	col := startCollector(t)
	ops := freeAddr(t)
	bin := build(t, "./examples/amqp-example")
	n := startNode(t, bin, "AMQP_URL="+pkgVhost.URL(t), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+col.addr,
		"OTEL_BSP_SCHEDULE_DELAY=100", "HATO_OPS_ADDR="+ops)
	waitReady(t, ops)

	conn := brokertest.Dial(t, pkgVhost.URL(t), "e2e-otel-driver")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "example.response", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	responses, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// As tomodachi sends it: a JSON envelope, traceparent a long string.
	const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	payload, err := envelope.JSON.Build(envelope.Build{Service: envelope.Service{Name: "tomodachi-client"},
		Topic: "example.topic", MessageUUID: envelope.NewUUID4(), Time: time.Now()}, map[string]any{"n": 1}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "amq.topic", "example.topic", false, false, amqp.Publishing{
		Headers: amqp.Table{"traceparent": "00-" + traceID + "-" + parentID + "-01"}, Body: payload}); err != nil {
		t.Fatal(err)
	}
	var fwd string
	select {
	case d := <-responses:
		fwd, _ = d.Headers["traceparent"].(string)
	case <-time.After(20 * time.Second):
		t.Fatal("no response")
	}
	if !strings.HasPrefix(fwd, "00-"+traceID+"-") {
		t.Fatalf("response traceparent %q, want trace %s", fwd, traceID)
	}
	if code, body := get(ops, "/metrics"); code != 200 || !strings.Contains(body, "messaging_rabbitmq_duration_seconds") {
		t.Errorf("/metrics: %d, duration missing", code)
	}

	n.terminate(t)
	col.mu.Lock()
	defer col.mu.Unlock()
	byName := map[string]*tracepb.Span{}
	for _, s := range col.spans {
		byName[s.GetName()] = s
		t.Logf("span %-26q kind=%-20s trace=%s span=%s parent=%s", s.GetName(), s.GetKind(),
			hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetSpanId()), hex.EncodeToString(s.GetParentSpanId()))
	}
	proc, pub := byName["example.topic process"], byName["example.response publish"]
	if proc == nil || pub == nil {
		t.Fatalf("spans %v, want example.topic process and example.response publish", byName)
	}
	if hex.EncodeToString(proc.GetParentSpanId()) != parentID || hex.EncodeToString(proc.GetTraceId()) != traceID {
		t.Errorf("consumer span not a child of the incoming context")
	}
	if string(pub.GetParentSpanId()) != string(proc.GetSpanId()) || fwd != "00-"+traceID+"-"+hex.EncodeToString(pub.GetSpanId())+"-01" {
		t.Errorf("publish span or forwarded traceparent %q not chained to the consumer span", fwd)
	}
	if col.resource["service.name"] != "amqp-example" || col.resource["service.instance.id"] == "" {
		t.Errorf("resource %v", col.resource)
	}
	if !col.metrics["messaging.rabbitmq.duration"] || !col.metrics["hato.messages.confirmed"] {
		t.Errorf("metrics exported: %v", col.metrics)
	}
}

// With OTEL_METRICS_EXPORTER=none (for a backend that takes traces only,
// such as Jaeger, which answers a metrics export with 404) the example
// node sends no metrics, not even the last flush when it stops, and still
// serves them on /metrics.
func TestExampleNodeMetricsExporterNone(t *testing.T) {
	col := startCollector(t)
	ops := freeAddr(t)
	bin := build(t, "./examples/amqp-example")
	n := startNode(t, bin, "AMQP_URL="+pkgVhost.URL(t), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+col.addr,
		"OTEL_METRICS_EXPORTER=none", "OTEL_METRIC_EXPORT_INTERVAL=50", "HATO_OPS_ADDR="+ops)
	waitReady(t, ops)
	if code, body := get(ops, "/metrics"); code != 200 || !strings.Contains(body, "hato_publish_buffered") {
		t.Errorf("/metrics: %d, hato_publish_buffered missing", code)
	}
	n.terminate(t)
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.metricsExports != 0 {
		t.Errorf("%d metrics exports (%v), want none", col.metricsExports, col.metrics)
	}
}

package hato

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/hato-go/hato/actors"
)

// The pause book follows a route through open, half-open and closed, and
// its gauges report the state and the time paused.
func TestPauseBookAndGauges(t *testing.T) {
	b := newPauseBook()
	reader := sdkmetric.NewManualReader()
	if err := b.observe(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("t")); err != nil {
		t.Fatal(err)
	}
	b.event(actors.BreakerEvent{Route: "r", State: actors.BreakerOpen, Cause: errors.New("db down"), Cooldown: time.Second})
	if p := b.paused(); len(p) != 1 || p[0].State != "open" || p[0].Cause != "db down" || p[0].Cooldown != time.Second {
		t.Fatalf("paused %+v", p)
	}
	state, paused := collect(t, reader)
	if state != 1 || paused <= 0 {
		t.Errorf("gauges while open: state %d paused %v", state, paused)
	}
	b.event(actors.BreakerEvent{Route: "r", State: actors.BreakerHalfOpen})
	if p := b.paused(); len(p) != 1 || p[0].State != "half-open" || p[0].Cause != "db down" {
		t.Errorf("half-open %+v", p)
	}
	b.event(actors.BreakerEvent{Route: "r", State: actors.BreakerClosed, Paused: 3 * time.Second})
	if p := b.paused(); len(p) != 0 {
		t.Errorf("still paused after closing: %+v", p)
	}
	if state, paused = collect(t, reader); state != 0 || paused != 3 {
		t.Errorf("gauges after closing: state %d paused %v, want 0 and 3 s", state, paused)
	}
}

func collect(t *testing.T, r *sdkmetric.ManualReader) (state int64, paused float64) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				if m.Name == "hato.route.breaker.state" && len(d.DataPoints) == 1 {
					state = d.DataPoints[0].Value
				}
			case metricdata.Sum[float64]:
				if m.Name == "hato.route.paused.time" && len(d.DataPoints) == 1 {
					paused = d.DataPoints[0].Value
				}
			}
		}
	}
	return state, paused
}

package main

import (
	"context"
	"os"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/hato-go/hato"
)

// telemetry sets up OTLP/HTTP export of traces and metrics when the
// standard environment asks for it (an OTLP endpoint is set and
// OTEL_SDK_DISABLED is not true), and returns the hato options that use it
// and a shutdown that flushes what is buffered. Without an endpoint it
// returns no option: hato then uses the global (no-op) providers, and
// still passes trace context on.
func telemetry(ctx context.Context, name, uuid string) ([]hato.Option, func(), error) {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" || !otlpConfigured() {
		return nil, func() {}, nil
	}
	res := hato.ServiceResource(name, uuid)
	spans, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	metrics, err := otlpmetrichttp.New(ctx)
	if err != nil {
		return nil, nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)), sdkmetric.WithResource(res))
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
	}
	return []hato.Option{hato.WithTracerProvider(tp), hato.WithMeterProvider(mp)}, shutdown, nil
}

func otlpConfigured() bool {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

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
// and a shutdown that flushes what is buffered. OTEL_TRACES_EXPORTER=none
// or OTEL_METRICS_EXPORTER=none leaves that signal out (a backend that
// takes traces only, such as Jaeger, would answer every metrics export
// with 404). Without an endpoint it returns no option: hato then uses the
// global (no-op) providers, and still passes trace context on.
func telemetry(ctx context.Context, name, uuid string) ([]hato.Option, func(), error) {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" || !otlpConfigured() {
		return nil, func() {}, nil
	}
	res := hato.ServiceResource(name, uuid)
	var opts []hato.Option
	var stops []func(context.Context) error
	if os.Getenv("OTEL_TRACES_EXPORTER") != "none" {
		spans, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, nil, err
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans), sdktrace.WithResource(res))
		opts, stops = append(opts, hato.WithTracerProvider(tp)), append(stops, tp.Shutdown)
	}
	if os.Getenv("OTEL_METRICS_EXPORTER") != "none" {
		metrics, err := otlpmetrichttp.New(ctx)
		if err != nil {
			return nil, nil, err
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)), sdkmetric.WithResource(res))
		opts, stops = append(opts, hato.WithMeterProvider(mp)), append(stops, mp.Shutdown)
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, stop := range stops {
			_ = stop(ctx)
		}
	}
	return opts, shutdown, nil
}

func otlpConfigured() bool {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		if os.Getenv(v) != "" {
			return true
		}
	}
	return false
}

package main

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hato-go/hato"
)

// hatoImpl is the forwarding service on hato, as examples/amqp-example (the
// tomodachi amqp-example service) writes it, with default options (plus
// Concurrency when above 1).
type hatoImpl struct {
	name        string
	concurrency int
	tracing     tracing
	svc         *hato.Service
	shutdown    func(context.Context)
	// system, when set, is the actor system the service runs in
	// (hato.WithActorSystem), e.g. one that counts actor messages.
	system *actor.ActorSystem
}

// tracing is what an implementation measures of OpenTelemetry.
type tracing int

const (
	traceOff       tracing = iota // no SDK, messages without trace context
	tracePropagate                // no SDK, messages with a traceparent
	traceRecord                   // a recording SDK, messages with a traceparent
)

func (h *hatoImpl) Name() string { return h.name }

// Traced makes the driver send a traceparent (see traceHeaders).
func (h *hatoImpl) Traced() bool { return h.tracing != traceOff }

// sdkOptions is a recording SDK: every span recorded and batched (to an
// exporter that discards, so memory stays flat), every measurement
// aggregated.
func (h *hatoImpl) sdkOptions() []hato.Option {
	if h.tracing != traceRecord {
		return nil
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	h.shutdown = func(ctx context.Context) {
		_ = tp.Shutdown(ctx)
		_ = mp.Shutdown(ctx)
	}
	return []hato.Option{hato.WithTracerProvider(tp), hato.WithMeterProvider(mp)}
}

func (h *hatoImpl) Start(ctx context.Context, url, tag, in, out string) error {
	opts := append(h.sdkOptions(), hato.WithURL(url))
	if h.system != nil {
		opts = append(opts, hato.WithActorSystem(h.system))
	}
	svc, err := hato.New("bench-"+tag, opts...)
	if err != nil {
		return err
	}
	ropts := []hato.RouteOption{hato.HandlerName("forward")}
	if h.concurrency > 1 {
		ropts = append(ropts, hato.Concurrency(h.concurrency))
	}
	if err := hato.Subscribe(svc, in, func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, out)
	}, ropts...); err != nil {
		return err
	}
	h.svc = svc
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("hato start: %w", err)
	}
	return nil
}

func (h *hatoImpl) Queues() []string {
	if h.svc == nil {
		return nil
	}
	var qs []string
	for _, r := range h.svc.Routes() {
		qs = append(qs, r.Queue, r.DeadLetterQueue)
	}
	return qs
}

func (h *hatoImpl) Err() error {
	if h.svc == nil {
		return nil
	}
	return h.svc.Err()
}

func (h *hatoImpl) Stop(ctx context.Context) error {
	if h.svc == nil {
		return nil
	}
	err := h.svc.Stop(ctx)
	if h.shutdown != nil {
		h.shutdown(ctx)
	}
	return err
}

package main

import (
	"context"
	"fmt"

	"github.com/hato-go/hato"
)

// hatoImpl is the forwarding service on hato, as examples/amqp-example (the
// tomodachi amqp-example service) writes it, with default options (plus
// Concurrency when above 1).
type hatoImpl struct {
	name        string
	concurrency int
	svc         *hato.Service
}

func (h *hatoImpl) Name() string { return h.name }

func (h *hatoImpl) Start(ctx context.Context, url, tag, in, out string) error {
	svc, err := hato.New("bench-"+tag, hato.WithURL(url))
	if err != nil {
		return err
	}
	opts := []hato.RouteOption{hato.HandlerName("forward")}
	if h.concurrency > 1 {
		opts = append(opts, hato.Concurrency(h.concurrency))
	}
	if err := hato.Subscribe(svc, in, func(ctx context.Context, msg *hato.Message[any]) error {
		return svc.Publish(ctx, msg.Data, out)
	}, opts...); err != nil {
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
	return h.svc.Stop(ctx)
}

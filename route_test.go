package hato_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

func TestRegistrationErrorsSurfaceAtStart(t *testing.T) {
	svc := offlineService(t, "bad-routes")
	if err := hato.Subscribe[any](svc, "k", nil); !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("nil handler: %v", err)
	}
	err := hato.Subscribe(svc, "k", func(context.Context, *hato.Message[any]) error { return nil }, hato.Concurrency(0))
	if !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("concurrency 0: %v", err)
	}
	if err := svc.Start(context.Background()); !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("Start = %v, want the registration error", err)
	}
}

func TestProtobufRouteNeedsAProtobufPayloadType(t *testing.T) {
	svc := offlineService(t, "proto-check")
	type notProto struct{ ID string }
	err := hato.Subscribe(svc, "k", func(context.Context, *hato.Message[notProto]) error { return nil },
		hato.Envelope(envelope.Protobuf))
	if !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("protobuf route with a non-proto payload: %v, want ErrInvalidOption", err)
	}
}

func TestRouteNamesMatchTomodachi(t *testing.T) {
	const uuid = "5d0b530f-5c44-4981-b01f-342801bd48f5"
	svc, err := hato.New("names", hato.WithUUID(uuid), hato.WithQueueNamePrefix("svc."), hato.RoutingKeyPrefix("env.prod."))
	if err != nil {
		t.Fatal(err)
	}
	h := func(context.Context, *hato.Message[any]) error { return nil }
	mustSubscribe(t, svc, "test.topic", h)
	mustSubscribe(t, svc, "test.topic", h, hato.NotCompeting(), hato.HandlerName("func"))
	mustSubscribe(t, svc, "åäö.topic", h, hato.QueueName("fixed"))
	r := svc.Routes()
	want := []struct{ queue, binding string }{
		{broker.QueueName("test.topic", "", uuid, true, "svc."), "env.prod.test.topic"},
		{broker.QueueName("test.topic", "func", uuid, false, "svc."), "env.prod.test.topic"},
		{"svc.fixed", "env.prod.___c3a5____c3a4____c3b6_.topic"},
	}
	// From queue_names.jsonl: competing test.topic with prefix "svc.".
	if r[0].Queue != "svc.540e8e5bc604e4ea618f7e0517a04f030ad1dcbff2e121e9466ddd1c811450bf" {
		t.Errorf("competing queue %s", r[0].Queue)
	}
	if r[1].Queue != "svc.b444917b9b922e8c29235737c7775c823e092c2374d1bfde071d42c637e3b4fd" {
		t.Errorf("non-competing queue %s", r[1].Queue)
	}
	for i, w := range want {
		if r[i].Queue != w.queue || r[i].BindingKey != w.binding {
			t.Errorf("route %d: queue %s binding %s, want %s %s", i, r[i].Queue, r[i].BindingKey, w.queue, w.binding)
		}
		wantDLQ := r[i].Queue + ".dlq"
		if i == 1 {
			// A non-competing route's dead-letter queue is the route's, not
			// the instance's: named without the uuid.
			sum := sha256.Sum256([]byte("test.topic" + "func" + "names"))
			wantDLQ = "svc." + hex.EncodeToString(sum[:]) + ".dlq"
		}
		if r[i].DeadLetterQueue != wantDLQ {
			t.Errorf("route %d: dead-letter queue %s, want %s", i, r[i].DeadLetterQueue, wantDLQ)
		}
	}
}

package hato_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

func TestInvalidOptionsAreRejectedAtConstruction(t *testing.T) {
	for name, opts := range map[string][]hato.Option{
		"bad url":            {hato.WithURL("http://nope")},
		"port":               {hato.WithPort(0)},
		"heartbeat":          {hato.WithHeartbeat(time.Millisecond)},
		"prefetch":           {hato.Prefetch(0, 400)},
		"nil logger":         {hato.WithLogger(nil)},
		"nil actor system":   {hato.WithActorSystem(nil)},
		"empty exchange":     {hato.Exchange("")},
		"nil envelope":       {hato.Envelope(nil)},
		"negative queue ttl": {hato.WithQueueTTL(-time.Second)},
		"nil option":         {nil},
		"max message size 0": {hato.WithMaxMessageSize(0)},
		"channels per conn":  {hato.WithChannelsPerConnection(-1)},
		"channels > 65535":   {hato.WithChannelsPerConnection(65536)},
		"handler timeout":    {hato.HandlerTimeout(-time.Second)},
		"liveness interval":  {hato.WithLivenessInterval(0)},
		"stall after":        {hato.WithStallAfter(-time.Second)},
		"unhealthy after":    {hato.WithUnhealthyAfter(0)},
		"liveness checks":    {hato.WithLivenessChecks(0)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := hato.New("svc", opts...); !errorsIs(err, hato.ErrInvalidOption) {
				t.Errorf("New = %v, want ErrInvalidOption", err)
			}
		})
	}
	if _, err := hato.New(""); !errorsIs(err, hato.ErrInvalidOption) {
		t.Errorf("empty name: %v", err)
	}
}

func TestURLNeverLeaksThePassword(t *testing.T) {
	_, err := hato.New("svc", hato.WithURL("amqp://user:s3cret@host:5672/%zz"))
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %v must exist and not show the password", err)
	}
	t.Setenv("AMQP_URL", "amqp://user:s3cret@host:5672/%zz")
	_, err = hato.New("svc")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("AMQP_URL error %v must exist and not show the password", err)
	}
}

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

// Issue 19: negative values were silently replaced by defaults, and port
// 99999 was accepted at New and retried until the start timeout.
func TestBadValuesAreRefusedAtNew(t *testing.T) {
	for name, opt := range map[string]hato.Option{
		"negative MaxAttempts":     hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}),
		"negative MaxRedeliveries": hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: -2}),
		"negative retry backoff":   hato.FailureHandling(hato.FailurePolicy{Backoff: hato.Backoff{Initial: -time.Second}}),
		"NaN multiplier":           hato.WithReconnectBackoff(hato.Backoff{Multiplier: math.NaN()}),
		"jitter above 1":           hato.WithReconnectBackoff(hato.Backoff{Jitter: 2}),
		"initial above max":        hato.WithReconnectBackoff(hato.Backoff{Initial: time.Minute, Max: time.Second}),
		"negative restart window":  hato.Supervision(hato.RestartPolicy{Window: -time.Second}),
		"negative restart backoff": hato.Supervision(hato.RestartPolicy{Backoff: hato.Backoff{Max: -1}}),
		"port 99999":               hato.WithURL("amqp://guest:guest@127.0.0.1:99999/"),
	} {
		if _, err := hato.New("bad", opt); !errors.Is(err, hato.ErrInvalidOption) {
			t.Errorf("%s: New: %v, want ErrInvalidOption", name, err)
		}
	}
	// The error names the field that is negative, not a valid one beside it.
	_, err := hato.New("bad", hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}))
	if err == nil || !strings.Contains(err.Error(), "MaxAttempts -1 is negative") || strings.Contains(err.Error(), "MaxRedeliveries") {
		t.Errorf("negative MaxAttempts: %v", err)
	}
	svc, err := hato.New("bad", hato.WithURL(offlineURL))
	if err != nil {
		t.Fatal(err)
	}
	err = hato.Subscribe(svc, "k", func(context.Context, *hato.Message[map[string]any]) error { return nil },
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: -1}))
	if !errors.Is(err, hato.ErrInvalidOption) {
		t.Errorf("Subscribe with a negative MaxAttempts: %v, want ErrInvalidOption", err)
	}
	t.Setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:99999/")
	if _, err := hato.New("bad"); !errors.Is(err, hato.ErrInvalidOption) {
		t.Errorf("AMQP_URL with port 99999: %v, want ErrInvalidOption", err)
	}
	// The documented negatives stay: no jitter, unlimited restarts.
	if _, err := hato.New("ok", hato.WithURL(offlineURL), hato.WithReconnectBackoff(hato.Backoff{Jitter: -1}),
		hato.Supervision(hato.RestartPolicy{MaxRestarts: -1})); err != nil {
		t.Errorf("documented negatives: %v", err)
	}
}

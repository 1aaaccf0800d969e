package hatotest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/hatotest"
)

func TestServiceOnTheBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	svc, err := hato.New("svc", hatotest.Transport(b), hato.RoutingKeyPrefix("env."))
	if err != nil {
		t.Fatal(err)
	}
	_ = hato.Subscribe(svc, "in.*", func(ctx context.Context, m *hato.Message[order]) error {
		if m.Data.ID == 0 {
			return hato.DeadLetter(errors.New("no id"))
		}
		return svc.Publish(ctx, m.Data, "out")
	})
	hatotest.Start(t, svc)
	if st, err := svc.Status(ctx); err != nil || !st.Connected {
		t.Errorf("status %+v, %v: want connected", st, err)
	}
	_ = b.Publish(ctx, "in.a", order{ID: 1}, hatotest.RoutingKeyPrefix("env."))
	_ = b.Publish(ctx, "in.b", order{ID: 0}, hatotest.RoutingKeyPrefix("env."))
	_ = b.Publish(ctx, "in.c", order{ID: 2}) // no prefix: not for this service
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	pub := b.Published()
	if len(pub) != 1 || pub[0].Topic != "out" || pub[0].RoutingKey != "env.out" || pub[0].Service.Name != "svc" {
		t.Errorf("published %+v, want one message to env.out (topic out) from svc", pub)
	}
	var got order
	if _, err := pub[0].Decode(&got); err != nil || got.ID != 1 {
		t.Errorf("decoded %+v, %v", got, err)
	}
	dl := b.DeadLettered(svc.Routes()[0].DeadLetterQueue)
	if len(dl) != 1 || dl[0].Header("x-hato-original-routing-key") != "env.in.b" {
		t.Errorf("dead-lettered %+v, want the message of in.b", dl)
	}
	outcomes := b.Outcomes()
	if len(outcomes) != 2 || outcomes[0].Settlement != hatotest.Acked || outcomes[1].Settlement != hatotest.Acked {
		t.Errorf("outcomes %+v, want two acks (the dead-lettered one is acked once its copy is in)", outcomes)
	}
	if n := len(b.PublishedTo("in.#")); n != 0 {
		t.Errorf("PublishedTo(in.#) = %d messages; injected messages are not captured", n)
	}
}

func TestTransportNil(t *testing.T) {
	if _, err := hato.New("svc", hatotest.Transport(nil)); !errors.Is(err, hato.ErrInvalidOption) {
		t.Errorf("New with a nil broker: %v, want ErrInvalidOption", err)
	}
}

// Issue 19: HATO_OPS_ADDR from the environment started ops servers in
// hatotest services, so parallel tests clashed on the port.
func TestHatotestServicesIgnoreHATO_OPS_ADDR(t *testing.T) {
	t.Setenv("HATO_OPS_ADDR", "127.0.0.1:0")
	b := hatotest.NewBroker()
	svc, err := hato.New("ops-env", hatotest.Transport(b))
	if err != nil {
		t.Fatal(err)
	}
	hatotest.Start(t, svc)
	if addr := svc.OpsAddr(); addr != "" {
		t.Errorf("hatotest service serves ops on %s from HATO_OPS_ADDR", addr)
	}
}

package hato_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/hatotest"
	"github.com/hato-go/hato/internal/testpb"
)

func warnings(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
		out = append(out, e.Message)
	}
	return out
}

func hasWarning(logs *observer.ObservedLogs, sub string) int {
	n := 0
	for _, w := range warnings(logs) {
		if strings.Contains(w, sub) {
			n++
		}
	}
	return n
}

// Issue 19: mistakes that passed without a word now warn: a closure's
// "funcN" name, two competing routes on one key, a protobuf type on the
// JSON envelope (Subscribe and Publish).
func TestSilentMistakesWarn(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	b := hatotest.NewBroker()
	svc, err := hato.New("warn", hatotest.Transport(b), hato.WithLogger(zap.New(core)))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, *hato.Message[map[string]any]) error { return nil }
	mustSubscribe(t, svc, "orders.created", ok)
	if n := hasWarning(logs, "function literal"); n != 1 {
		t.Errorf("closure handler: %d warnings, want 1: %q", n, warnings(logs))
	}
	mustSubscribe(t, svc, "orders.created", ok, hato.HandlerName("second"))
	if n := hasWarning(logs, "two routes consume one queue"); n != 1 {
		t.Errorf("two competing routes on one key: %d warnings, want 1: %q", n, warnings(logs))
	}
	mustSubscribe(t, svc, "people", func(context.Context, *hato.Message[*testpb.Person]) error { return nil }, hato.HandlerName("people"))
	if n := hasWarning(logs, "protobuf message type from the JSON envelope"); n != 1 {
		t.Errorf("protobuf type on a JSON route: %d warnings, want 1: %q", n, warnings(logs))
	}
	mustSubscribe(t, svc, "people.pb", func(context.Context, *hato.Message[*testpb.Person]) error { return nil },
		hato.HandlerName("peoplePB"), hato.Envelope(envelope.Protobuf))
	if n := hasWarning(logs, "protobuf message type from the JSON envelope"); n != 1 {
		t.Errorf("protobuf route with the protobuf envelope warned: %q", warnings(logs))
	}
	hatotest.Start(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 2 {
		_ = svc.Publish(ctx, &testpb.Person{Name: "Ada"}, "people")
	}
	if n := hasWarning(logs, "publishing a protobuf message in the JSON envelope"); n != 1 {
		t.Errorf("publishing protobuf in JSON twice: %d warnings, want 1: %q", n, warnings(logs))
	}
}

type validated struct {
	Amount int `json:"amount"`
}

// Issue 19: Validator is func(any) error and receives *T, which the docs
// did not say; ValidatorOf is typed.
func TestValidatorOfIsTyped(t *testing.T) {
	b := hatotest.NewBroker()
	svc, err := hato.New("validate", hatotest.Transport(b))
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan int, 4)
	mustSubscribe(t, svc, "amounts", func(_ context.Context, m *hato.Message[validated]) error {
		handled <- m.Data.Amount
		return nil
	}, hato.HandlerName("amounts"), hato.ValidatorOf(func(v *validated) error {
		if v.Amount <= 0 {
			return errors.New("amount must be positive")
		}
		return nil
	}))
	hatotest.Start(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.Publish(ctx, "amounts", validated{Amount: -1})
	_ = b.Publish(ctx, "amounts", validated{Amount: 5})
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	close(handled)
	var got []int
	for a := range handled {
		got = append(got, a)
	}
	if len(got) != 1 || got[0] != 5 {
		t.Errorf("handled %v, want only the valid 5", got)
	}
	if q := svc.Routes()[0].DeadLetterQueue; len(b.DeadLettered(q)) != 1 {
		t.Errorf("dead-lettered %d, want the invalid one", len(b.DeadLettered(q)))
	}
}

// Issue 19: a validator's refusal was reported as "undecodable"; the
// dead letter's x-hato-reason now says "invalid message".
func TestValidatorRefusalIsInvalidNotUndecodable(t *testing.T) {
	b := hatotest.NewBroker()
	svc, err := hato.New("invalid", hatotest.Transport(b))
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, "amounts", func(context.Context, *hato.Message[validated]) error { return nil },
		hato.HandlerName("amounts"), hato.ValidatorOf(func(*validated) error { return errors.New("amount must be positive") }))
	hatotest.Start(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.Publish(ctx, "amounts", validated{Amount: -1})
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	dl := b.DeadLettered(svc.Routes()[0].DeadLetterQueue)
	if len(dl) != 1 {
		t.Fatalf("dead-lettered %d, want 1", len(dl))
	}
	if r, _ := dl[0].Header("x-hato-reason").(string); !strings.HasPrefix(r, "hato: invalid message ") {
		t.Errorf("x-hato-reason %q, want \"hato: invalid message ...\"", r)
	}
}

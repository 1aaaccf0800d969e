package hato_test

import (
	"context"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

func TestDedupeOptionValidated(t *testing.T) {
	if _, err := hato.New("dedupe-opt", hato.Dedupe(0, nil)); !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("New with a zero window: %v, want ErrInvalidOption", err)
	}
	svc := offlineService(t, "dedupe-opt", hato.Dedupe(time.Minute, hato.NewMemoryDedupeStore(10)))
	h := func(context.Context, *hato.Message[any]) error { return nil }
	if err := hato.Subscribe(svc, "k", h, hato.Dedupe(-time.Second, nil)); !errorsIs(err, hato.ErrInvalidOption) {
		t.Fatalf("Subscribe with a negative window: %v, want ErrInvalidOption", err)
	}
	if err := hato.Subscribe(svc, "k2", h, hato.Dedupe(time.Second, nil)); err != nil {
		t.Fatal(err)
	}
}

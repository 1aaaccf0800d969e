package hato_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testcert"
)

// Defect 16: a start that times out against an unreachable broker says
// why: the last dial error, the (redacted) address and the attempts made.
func TestStartTimeoutSaysWhy(t *testing.T) {
	svc := offlineService(t, "start-error",
		hato.WithURL("amqp://guest:s3cret@127.0.0.1:1/"),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := svc.Start(ctx)
	if err == nil {
		t.Fatal("start against 127.0.0.1:1 succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q does not match context.DeadlineExceeded", err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{"connection refused", "127.0.0.1:1", "attempts"} {
		if !strings.Contains(msg, want) {
			t.Errorf("start error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "s3cret") {
		t.Errorf("start error %q shows the password", msg)
	}
}

// Issue 19: TLS failures end Start at once, as a 403 does, instead of
// being retried until the start timeout (Start(context.Background())
// never returned).
func TestStartFailsAtOnceOnTLSErrors(t *testing.T) {
	cert := testcert.New(t, "127.0.0.1")
	for name, port := range map[string]int{
		"untrusted certificate": testcert.Listen(t, cert, testcert.Hangup),
		"plain listener":        testcert.Listen(t, nil, testcert.PlainAMQP),
	} {
		t.Run(name, func(t *testing.T) {
			svc := offlineService(t, "start-tls",
				hato.WithURL(fmt.Sprintf("amqps://guest:guest@127.0.0.1:%d/", port)),
				hato.WithTLS(&tls.Config{MinVersion: tls.VersionTLS12}),
				hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond}))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := svc.Start(ctx)
			if !errors.Is(err, hato.ErrTLS) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Start: %v, want hato.ErrTLS before the deadline", err)
			}
		})
	}
}

// Issue 19: nil contexts panicked; Start without a deadline against an
// unreachable broker hung silently.
func TestNilContextsAndStartWithoutDeadline(t *testing.T) {
	svc := offlineService(t, "nil-ctx", hato.WithStartTimeout(300*time.Millisecond),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond}))
	//nolint:staticcheck // nil contexts on purpose
	for name, call := range map[string]func() error{
		"Publish": func() error { return svc.Publish(nil, map[string]int{}, "k") }, //nolint:staticcheck
		"Status":  func() error { _, err := svc.Status(nil); return err },          //nolint:staticcheck
		"Start":   func() error { return svc.Start(nil) },                          //nolint:staticcheck
		"Stop":    func() error { return svc.Stop(nil) },                           //nolint:staticcheck
	} {
		if err := call(); !errors.Is(err, hato.ErrInvalidArgument) {
			t.Errorf("%s(nil): %v, want ErrInvalidArgument", name, err)
		}
	}
	err := svc.Start(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Start(context.Background()) against 127.0.0.1:1: %v, want the start timeout and the cause", err)
	}
	if _, err := svc.Status(context.Background()); !errors.Is(err, hato.ErrStopped) {
		t.Errorf("Status after a failed start: %v, want ErrStopped", err)
	}
}

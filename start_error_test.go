package hato_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
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

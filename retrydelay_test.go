package hato_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/hatotest"
)

// TestRetryDelaysOnTheMemoryBroker: a message whose first delivery fails
// comes back from the delay queue (Message.Retry 1, routing key as
// published); one that always fails is dead-lettered after the last delay
// with its retry history, and each delivery had MaxAttempts in-process
// attempts.
func TestRetryDelaysOnTheMemoryBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := hatotest.NewBroker()
	svc, err := hato.New("svc", hatotest.Transport(b), hato.FailureHandling(hato.FailurePolicy{
		MaxAttempts: 2, RetryDelays: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
		Backoff: hato.Backoff{Initial: time.Millisecond, Jitter: -1},
	}))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := map[string][]int{} // id → Message.Retry of each run
	keys := map[string]string{}
	_ = hato.Subscribe(svc, "in.*", func(ctx context.Context, m *hato.Message[bpayload]) error {
		mu.Lock()
		runs[m.Data.ID] = append(runs[m.Data.ID], m.Retry)
		keys[m.Data.ID] = m.DeliveredRoutingKey
		mu.Unlock()
		if m.Data.ID == "always" || m.Retry == 0 {
			return errors.New("fails")
		}
		return nil
	})
	hatotest.Start(t, svc)
	_ = b.Publish(ctx, "in.a", bpayload{ID: "once"})
	_ = b.Publish(ctx, "in.b", bpayload{ID: "always"})
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := runs["once"]; len(got) != 3 || got[0] != 0 || got[1] != 0 || got[2] != 1 {
		t.Errorf("runs of once: %v, want [0 0 1] (two in-process attempts, then the delayed retry)", got)
	}
	if got := runs["always"]; len(got) != 6 || got[5] != 2 {
		t.Errorf("runs of always: %v, want 2 attempts × 3 deliveries, the last with Retry 2", got)
	}
	if keys["once"] != "in.a" {
		t.Errorf("delivered routing key after a delayed retry %q, want in.a", keys["once"])
	}
	dl := b.DeadLettered(svc.Routes()[0].DeadLetterQueue)
	if len(dl) != 1 {
		t.Fatalf("%d dead-lettered, want 1", len(dl))
	}
	if dl[0].Header("x-hato-retry") != int64(2) || dl[0].Header("x-hato-original-routing-key") != "in.b" {
		t.Errorf("dead-letter headers %v", dl[0].Publishing.Headers)
	}
	if h, _ := dl[0].Header("x-hato-retry-history").([]any); len(h) != 2 {
		t.Errorf("retry history %v, want 2 entries", dl[0].Header("x-hato-retry-history"))
	}
}

func TestRetryDelaysValidated(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second, time.Microsecond} {
		_, err := hato.New("svc", hato.FailureHandling(hato.FailurePolicy{RetryDelays: []time.Duration{d}}))
		if !errors.Is(err, hato.ErrInvalidOption) {
			t.Errorf("RetryDelays [%s]: %v, want ErrInvalidOption", d, err)
		}
	}
}

//go:build integration

package hato_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// With Concurrency 1 a message waiting for its in-process retry keeps the
// route's only slot: the next message runs after it, not in between.
func TestConcurrencyOneKeepsOrderAcrossRetries(t *testing.T) {
	key := testutil.Key(t, "ordered-retry")
	var mu sync.Mutex
	var seen []string
	var failed atomic.Bool
	svc := newService(t, "ordered-retry", hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 500 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 1},
	}))
	ids := fmtIDs("r", 3)
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		seen = append(seen, idOf(m))
		mu.Unlock()
		if idOf(m) == ids[0] && failed.CompareAndSwap(false, true) {
			return errors.New("transient")
		}
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, ids)
	brokertest.WaitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 4 }, "all handled")
	mu.Lock()
	defer mu.Unlock()
	want := strings.Join([]string{ids[0], ids[0], ids[1], ids[2]}, ",")
	if got := strings.Join(seen, ","); got != want {
		t.Fatalf("handled in order %s, want %s: the retry wait gave the slot away", got, want)
	}
}

// A handler that ignores its context outlives its actor's incarnation. The
// next incarnation must not run a handler beside it: with Concurrency 1 the
// redelivered message is handled once at a time, never twice at once.
func TestConcurrencyOneHoldsAcrossRestarts(t *testing.T) {
	key := testutil.Key(t, "ordered-restart")
	ev := &testutil.SupervisorEvents{}
	var running, maxRunning, calls atomic.Int32
	release := make(chan struct{})
	second := make(chan struct{}, 1)
	svc := newService(t, "ordered-restart", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			old := maxRunning.Load()
			if n <= old || maxRunning.CompareAndSwap(old, n) {
				break
			}
		}
		if calls.Add(1) > 1 {
			second <- struct{}{}
			return nil
		}
		<-release // ignores ctx
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"x"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 1 }, "the first handler running")

	svc.ActorSystem().Root.Stop(svc.Routes()[0].Actor)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 1 }, "respawn")
	conn := brokertest.Dial(t, brokerURL(t), "test-ordered-restart")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		ready, consumers := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return ready == 0 && consumers == 1
	}, "the redelivery held by the new incarnation")
	select {
	case <-second: // the bug: handled again while the first still runs
	case <-time.After(time.Second):
	}
	close(release)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 2 }, "the redelivery handled")
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("%d handlers of a Concurrency(1) route ran at once across a restart", m)
	}
}

//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

func TestStopFinishesHandlersInFlightAndReturnsTheRest(t *testing.T) {
	key := testutil.Key(t, "drain")
	first, second := testutil.NewCollector(), testutil.NewCollector()
	var started atomic.Int32
	svc := newService(t, "draining", hato.WithDrainTimeout(5*time.Second))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		started.Add(1)
		time.Sleep(200 * time.Millisecond)
		first.Add(idOf(m))
		return nil
	}, hato.Concurrency(4), hato.Prefetch(10, 0))
	testutil.Start(t, svc)

	ids := fmtIDs("d", 40)
	publishN(t, publisher(t), key, ids)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return started.Load() >= 4 }, "handlers running")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n := int(started.Load()); first.Total() != n {
		t.Errorf("%d handlers started but %d finished: Stop must let handlers in flight finish", n, first.Total())
	}

	// What the first instance did not handle is still in the queue.
	conn := brokertest.Dial(t, brokerURL(t), "test-drain-inspect")
	queue := svc.Routes()[0].Queue
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, queue)
		return n == len(ids)-first.Total()
	}, "the %d unhandled messages back in the queue", len(ids)-first.Total())

	next := newService(t, "draining")
	mustSubscribe(t, next, key, func(ctx context.Context, m *hato.Message[payload]) error {
		second.Add(idOf(m))
		return nil
	})
	testutil.Start(t, next)
	second.WaitDistinct(t, len(ids)-first.Total(), 20*time.Second)
	for _, id := range ids {
		if n := first.Count(id) + second.Count(id); n != 1 {
			t.Errorf("%s handled %d times, want exactly once across the two instances", id, n)
		}
	}
}

func TestStopAtTheDrainDeadlineReturnsUnfinishedDeliveries(t *testing.T) {
	key := testutil.Key(t, "stuck")
	var cancelled atomic.Bool
	var started atomic.Int32
	svc := newService(t, "stuck", hato.WithDrainTimeout(300*time.Millisecond))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		started.Add(1)
		<-ctx.Done() // a handler that only stops when told to
		cancelled.Store(true)
		return ctx.Err()
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"stuck-1", "stuck-2"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return started.Load() == 1 }, "handler running")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := svc.Stop(ctx)
	if !errorsIs(err, hato.ErrDrainIncomplete) {
		t.Fatalf("stop = %v, want ErrDrainIncomplete", err)
	}
	if hato.ExitCode(&hato.RunError{Code: hato.ExitStopIncomplete, Err: err}) != hato.ExitStopIncomplete {
		t.Error("exit code mapping")
	}
	brokertest.WaitFor(t, 5*time.Second, cancelled.Load, "the handler's context cancelled at the deadline")

	got := testutil.NewCollector()
	next := newService(t, "stuck")
	mustSubscribe(t, next, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, next)
	got.WaitDistinct(t, 2, 20*time.Second)
}

func TestStopIsIdempotentAndPublishAfterStopFails(t *testing.T) {
	svc := newService(t, "idempotent")
	testutil.Start(t, svc)
	ctx := context.Background()
	if err := svc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-svc.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := svc.Publish(ctx, "x", "k"); !errorsIs(err, hato.ErrStopped) {
		t.Fatalf("publish after stop: %v, want ErrStopped", err)
	}
	if err := svc.Start(ctx); !errorsIs(err, hato.ErrAlreadyStarted) {
		t.Fatalf("start after stop: %v, want ErrAlreadyStarted", err)
	}
}

// A route held in restart backoff never sees its Drain (its mailbox is
// suspended): Stop must not wait out the drain timeout for it, and the
// publishes outstanding at Stop, from an embedding goroutine and from an
// OnStop hook, must get their outcome before the deadline expires.
func TestStopDuringARestartBackoffReturnsPromptly(t *testing.T) {
	key := testutil.Key(t, "backoff")
	ev := &testutil.SupervisorEvents{}
	svc := newService(t, "backoff", hato.WithDrainTimeout(20*time.Second), hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		panic("handler bug")
	}, hato.Supervision(hato.RestartPolicy{
		Backoff:     hato.Backoff{Initial: time.Hour, Max: time.Hour},
		MaxRestarts: 3,
		Window:      time.Hour,
	}))
	hookErr := make(chan error, 1)
	svc.OnStop(func(ctx context.Context) error {
		hookErr <- svc.Publish(ctx, map[string]any{"id": "from-on-stop"}, testutil.Key(t, "nowhere"))
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"boom"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventFailed) == 1 }, "the route in restart backoff")

	// The embedder's ctx for Stop ends with the drain timeout, like its
	// publishing goroutine's.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	loopErr := make(chan error, 1)
	go func() {
		for {
			if err := svc.Publish(ctx, map[string]any{"id": "loop"}, testutil.Key(t, "nowhere")); err != nil {
				loopErr <- err
				return
			}
		}
	}()
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Stop(ctx) }()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(10 * time.Second):
		t.Error("Stop still running after 10s of a 20s drain timeout: it waits for the route in backoff")
		stopErr = <-stopped
	}
	if stopErr != nil {
		t.Errorf("stop = %v, want nil", stopErr)
	}
	if err := <-hookErr; err != nil {
		t.Errorf("publish from OnStop = %v, want it confirmed", err)
	}
	if err := <-loopErr; !errors.Is(err, hato.ErrStopped) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("publishing goroutine ended with %v, want ErrStopped", err)
	}
}

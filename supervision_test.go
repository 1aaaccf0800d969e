//go:build integration

package hato_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/supervisor"
	"github.com/hato-go/hato/test/brokertest"
)

// fastSupervision restarts quickly and never gives up within a test.
var fastSupervision = hato.Supervision(hato.RestartPolicy{
	Backoff:     hato.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond},
	MaxRestarts: 1000,
})

func TestPanickingHandlerRestartsTheActorAndLosesNothing(t *testing.T) {
	key := testutil.Key(t, "panics")
	ev := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	var seen sync.Map
	svc := newService(t, "panicky", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		id := idOf(m)
		// Every tenth message panics the first time it is handled.
		if _, again := seen.LoadOrStore(id, true); !again && id[len(id)-1] == '3' {
			panic("handler bug on " + id)
		}
		got.Add(id)
		return nil
	}, hato.Concurrency(4))
	testutil.Start(t, svc)

	ids := fmtIDs("p", 300)
	publishN(t, publisher(t), key, ids)
	got.WaitDistinct(t, len(ids), 30*time.Second)
	if missing := got.Missing(ids); len(missing) > 0 {
		t.Fatalf("lost %d messages: %v", len(missing), missing)
	}
	if n := ev.Count(hato.EventFailed); n == 0 {
		t.Error("no EventFailed: the panics did not reach the supervisor")
	}
	brokertest.WaitFor(t, 5*time.Second, func() bool { return ev.Count(hato.EventRestarted) > 0 }, "a restart")
	select {
	case <-svc.Failed():
		t.Fatalf("service failed: %v", svc.Err())
	default:
	}
}

func TestConsumerActorStoppedFromOutsideIsRespawned(t *testing.T) {
	key := testutil.Key(t, "killed")
	ev := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	var handled atomic.Int32
	svc := newService(t, "killable", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		handled.Add(1)
		time.Sleep(time.Millisecond) // a handler doing some work
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	pid := svc.Routes()[0].Actor
	sys := svc.ActorSystem()

	ids := fmtIDs("k", 600)
	published := publishAsync(publisher(t), key, ids)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return handled.Load() > 100 }, "some handled")
	sys.Root.Stop(pid)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 1 }, "respawn")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return handled.Load() > 300 }, "more handled")
	sys.Root.Poison(pid)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 2 }, "second respawn")

	if err := <-published; err != nil {
		t.Fatal(err)
	}
	got.WaitDistinct(t, len(ids), 30*time.Second)
	if missing := got.Missing(ids); len(missing) > 0 {
		t.Fatalf("lost %d messages", len(missing))
	}
	if ev.Count(hato.EventStopped) != 2 {
		t.Errorf("EventStopped %d, want 2", ev.Count(hato.EventStopped))
	}
}

func TestARouteThatGivesUpFailsTheServiceLoudly(t *testing.T) {
	key := testutil.Key(t, "hopeless")
	ev := &testutil.SupervisorEvents{}
	svc := newService(t, "hopeless", hato.WithSupervisorEvents(ev.Add), hato.Supervision(hato.RestartPolicy{
		Backoff:     hato.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		MaxRestarts: 2,
		Window:      time.Minute,
	}), hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 100}))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		panic("always")
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, fmtIDs("h", 5))
	select {
	case <-svc.Failed():
	case <-time.After(20 * time.Second):
		t.Fatal("the service did not fail after its route exhausted the restart budget")
	}
	if !errorsIs(svc.Err(), hato.ErrRouteFailed) || !errorsIs(svc.Err(), supervisor.ErrGaveUp) {
		t.Errorf("Err() = %v, want ErrRouteFailed wrapping ErrGaveUp", svc.Err())
	}
	if ev.Count(hato.EventGaveUp) != 1 {
		t.Errorf("EventGaveUp reported %d times, want 1", ev.Count(hato.EventGaveUp))
	}
	// The messages are still in the queue, not lost.
	testutil.Stop(t, svc)
	conn := brokertest.Dial(t, brokerURL(t), "test-hopeless")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return n == 5
	}, "the 5 messages back in the queue")
}

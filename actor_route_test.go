//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// orderActor is a user's actor in an embedding actor system: it receives
// decoded messages, publishes onward, and replies Ack, or an error once.
type orderActor struct {
	svc     func() *hato.Service
	out     string
	got     *testutil.Collector
	failed  *atomic.Bool
	started *atomic.Int32
}

func (a *orderActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.started.Add(1)
	case *hato.Message[payload]:
		if msg.Data.ID == "a-7" && a.failed.CompareAndSwap(false, true) {
			ctx.Respond(errors.New("transient failure"))
			return
		}
		if err := a.svc().Publish(msg.Context(), msg.Data, a.out); err != nil {
			ctx.Respond(err)
			return
		}
		a.got.Add(msg.Data.ID)
		ctx.Respond(hato.Ack{})
	}
}

func TestActorRouteInAnEmbeddingActorSystem(t *testing.T) {
	in, out := testutil.Key(t, "to-actor"), testutil.Key(t, "from-actor")
	sys := actor.NewActorSystem()
	defer sys.Shutdown()

	var svc *hato.Service
	got, forwarded := testutil.NewCollector(), testutil.NewCollector()
	a := &orderActor{svc: func() *hato.Service { return svc }, out: out, got: got, failed: &atomic.Bool{}, started: &atomic.Int32{}}
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return a }))

	svc = newService(t, "embedded", hato.WithActorSystem(sys),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 3}))
	if err := hato.SubscribeActor[payload](svc, in, pid, hato.ActorTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	sink := newService(t, "actor-sink")
	mustSubscribe(t, sink, out, func(ctx context.Context, m *hato.Message[payload]) error {
		forwarded.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	testutil.Start(t, sink)
	if svc.ActorSystem() != sys {
		t.Fatal("service did not run in the given actor system")
	}

	ids := fmtIDs("a", 50)
	publishN(t, publisher(t), in, ids)
	got.WaitDistinct(t, len(ids), 20*time.Second)
	forwarded.WaitDistinct(t, len(ids), 20*time.Second)
	if !a.failed.Load() {
		t.Error("the actor's error reply never happened")
	}
	if got.Count("a-7") != 1 {
		t.Errorf("a-7 handled %d times after one error reply, want a retry that succeeds once", got.Count("a-7"))
	}

	// Stopping the service leaves the embedding system and its actors alive.
	testutil.Stop(t, svc)
	res, err := sys.Root.RequestFuture(pid, &actor.Touch{}, time.Second).Result()
	if err != nil || res == nil {
		t.Fatalf("user actor unreachable after the service stopped: %v", err)
	}
	brokertest.WaitFor(t, time.Second, func() bool { return a.started.Load() == 1 }, "actor untouched")
}

func TestActorRouteTimesOutAndRetries(t *testing.T) {
	in := testutil.Key(t, "slow-actor")
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	var calls atomic.Int32
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*hato.Message[payload]); ok {
			if calls.Add(1) == 1 {
				return // never replies the first time
			}
			ctx.Respond(hato.Ack{})
		}
	}))
	svc := newService(t, "slow-actor", hato.WithActorSystem(sys))
	if err := hato.SubscribeActor[payload](svc, in, pid, hato.ActorTimeout(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	publishN(t, publisher(t), in, []string{"x"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 2 }, "the retry after the timeout")
	conn := brokertest.Dial(t, brokerURL(t), "test-actor-timeout")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return n == 0
	}, "queue empty")
}

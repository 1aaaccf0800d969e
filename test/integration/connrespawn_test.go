//go:build integration

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 17-3b at the broker: the connection actor of an 8-route service is
// stopped from outside twice while the service publishes to its own routes.
// The root supervisor respawns it; every Publish returns (confirmed, or
// ErrConnectionClosed for those the stop caught), none waits to its
// deadline, every confirmed message arrives, and every route consumes
// again afterwards.
func TestConnectionActorStoppedFromOutsideResolvesEveryPublish(t *testing.T) {
	const routes, perRoute = 8, 150
	ev := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	svc := newService(t, "conn-stopped", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	keys := make([]string, routes)
	for i := range keys {
		keys[i] = testutil.Key(t, fmt.Sprintf("conn-stopped-%d", i))
		mustSubscribe(t, svc, keys[i], func(ctx context.Context, m *hato.Message[payload]) error {
			got.Add(idOf(m))
			return nil
		}, hato.HandlerName(fmt.Sprintf("route%d", i)))
	}
	testutil.Start(t, svc)
	sys := svc.ActorSystem()
	conn := actor.NewPID(sys.Address(), "hato-"+svc.Name()+"-"+svc.UUID()+"/connection")

	var mu sync.Mutex
	var confirmed []string
	outcomes := map[string]int{}
	var wg sync.WaitGroup
	publishing := make(chan struct{})
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perRoute {
				if j == perRoute/3 {
					close2(publishing)
				}
				id := fmt.Sprintf("c%d-%d", i, j)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := svc.Publish(ctx, payload{ID: id}, key)
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					confirmed = append(confirmed, id)
					outcomes["confirmed"]++
				case errors.Is(err, hato.ErrConnectionClosed):
					outcomes["connection closed"]++
				default:
					outcomes[err.Error()]++
				}
				mu.Unlock()
			}
		}()
	}
	<-publishing
	sys.Root.Stop(conn)
	brokertest.WaitFor(t, 20*time.Second, func() bool { return ev.Count(hato.EventRespawned) >= 1 }, "respawn")
	sys.Root.Stop(conn)
	brokertest.WaitFor(t, 20*time.Second, func() bool { return ev.Count(hato.EventRespawned) >= 2 }, "second respawn")
	wg.Wait()
	t.Logf("outcomes of %d publishes: %v", routes*perRoute, outcomes)
	for outcome, n := range outcomes {
		if outcome != "confirmed" && outcome != "connection closed" {
			t.Errorf("%d publishes ended with %q", n, outcome)
		}
	}
	// A publish that failed with ErrConnectionClosed may have been routed
	// all the same: wait for the confirmed ones by id, not by count.
	_ = brokertest.Eventually(30*time.Second, func() bool { return len(got.Missing(confirmed)) == 0 })
	if missing := got.Missing(confirmed); len(missing) > 0 {
		t.Fatalf("lost %d confirmed messages: %v", len(missing), missing)
	}
	// Every route consumes again.
	after := make([]string, routes)
	for i, key := range keys {
		after[i] = fmt.Sprintf("after-%d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := svc.Publish(ctx, payload{ID: after[i]}, key); err != nil {
			t.Fatalf("publish after the respawns: %v", err)
		}
		cancel()
	}
	brokertest.WaitFor(t, 15*time.Second, func() bool { return len(got.Missing(after)) == 0 }, "every route consuming again")
}

// close2 closes ch once (several publishers reach the mark).
func close2(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

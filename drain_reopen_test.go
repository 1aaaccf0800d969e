//go:build integration

package hato_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// A route whose session ended (here: its queue was deleted, so the broker
// cancelled the consumer) has a reopen scheduled. Stopping the service
// meanwhile finishes the route's drain at once; the scheduled reopen must
// not start consuming again while the OnStop hooks run.
func TestDrainedRouteDoesNotConsumeAgain(t *testing.T) {
	key := testutil.Key(t, "drained")
	ev := &testutil.SupervisorEvents{}
	reopen := hato.Backoff{Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, Multiplier: 1}
	svc := newService(t, "drained", hato.WithReconnectBackoff(reopen), hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error { return nil })
	conn := brokertest.Dial(t, brokerURL(t), "test-drained")
	var reconsumed atomic.Bool
	svc.OnStop(func(ctx context.Context) error {
		// Well past the reopen delay: a reopen would have declared the
		// queue again and consumed from it by then.
		err := brokertest.Eventually(3*time.Second, func() bool {
			_, consumers, err := brokertest.InspectQueue(conn, svc.Routes()[0].Queue)
			return err == nil && consumers > 0
		})
		reconsumed.Store(err == nil)
		return nil
	})
	testutil.Start(t, svc)
	queue := svc.Routes()[0].Queue

	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventUnavailable) > 0 },
		"the route's session ended")
	testutil.Stop(t, svc)
	if reconsumed.Load() {
		t.Fatal("the route consumed again after its drain finished (while the OnStop hooks ran)")
	}
}

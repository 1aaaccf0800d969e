//go:build integration

package hato_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Dead letters belong to the route, not to the instance: two starts of a
// service with a non-competing route (each with its own uuid, so its own
// queue) share one dead-letter queue, and leave no other behind.
func TestNotCompetingRoutesShareOneDeadLetterQueueAcrossStarts(t *testing.T) {
	key := testutil.Key(t, "nc-dlq")
	var dlqs, queues []string
	for _, uuid := range []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"} {
		evs := &testutil.DeliveryEvents{}
		svc := newService(t, "nc-dlq", hato.WithUUID(uuid), hato.WithDeliveryEvents(evs.Add))
		mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
			return hato.DeadLetter(errors.New("to the route's dead-letter queue"))
		}, hato.NotCompeting(), hato.HandlerName("on_event"))
		testutil.Start(t, svc)
		r := svc.Routes()[0]
		dlqs, queues = append(dlqs, r.DeadLetterQueue), append(queues, r.Queue)
		publishN(t, publisher(t), key, []string{uuid})
		brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() == 1 }, "message dead-lettered by %s", uuid)
		testutil.Stop(t, svc)
	}
	if queues[0] == queues[1] {
		t.Fatalf("both instances consumed from %s; the test needs two instance queues", queues[0])
	}
	if dlqs[0] != dlqs[1] {
		t.Fatalf("instances dead-letter to %s and %s, want one queue", dlqs[0], dlqs[1])
	}
	for _, q := range queues {
		if _, ok, err := brokertest.FindQueue(brokerVhost(t), q+".dlq"); err != nil || ok {
			t.Errorf("per-instance dead-letter queue %s.dlq: exists=%v err=%v", q, ok, err)
		}
	}
	q, ok, err := brokertest.FindQueue(brokerVhost(t), dlqs[0])
	if err != nil || !ok {
		t.Fatalf("dead-letter queue %s: found=%v err=%v", dlqs[0], ok, err)
	}
	if q.Messages != 2 {
		t.Errorf("dead-letter queue %s holds %d messages, want both instances' 2", q.Name, q.Messages)
	}
	if len(q.Arguments) != 0 {
		t.Errorf("dead-letter queue arguments %v, want none (it must not expire)", q.Arguments)
	}
}

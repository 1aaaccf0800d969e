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

// Issue 9: a quorum queue counts every return in x-delivery-count, also the
// returns of a lost connection (node down, network cut). Poison detection
// must not count those: messages held unacked across two connection losses
// are handled, not dead-lettered, even with MaxRedeliveries 1.
func TestQuorumPoisonIgnoresConnectionLoss(t *testing.T) {
	proxy, url := brokertest.Proxy(t, brokerURL(t))
	key := testutil.Key(t, "qq-loss")
	ids := fmtIDs("loss", 5)
	handled := testutil.NewCollector()
	var dl testutil.DeliveryEvents
	gate := make(chan struct{})
	var arrivals atomic.Int64
	svc := newService(t, "qq-loss",
		hato.WithURL(url),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}),
		hato.WithDeliveryEvents(dl.Add),
		hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 1}))
	err := hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		arrivals.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		handled.Add(idOf(m))
		return nil
	}, hato.QuorumQueue(), hato.Concurrency(3*len(ids))) // handlers of a lost channel keep their slots until they return
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, ids)

	// Each cut returns the unacked messages to the queue (x-delivery-count
	// +1); wait until all are held again before the next one.
	for cut := 1; cut <= 2; cut++ {
		want := int64(cut * len(ids))
		brokertest.WaitFor(t, 30*time.Second, func() bool { return arrivals.Load() >= want }, "%d arrivals", want)
		proxy.CutAll()
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		return arrivals.Load() >= int64(3*len(ids)) || dl.Len() > 0
	}, "redeliveries after the second cut")
	close(gate)
	for _, e := range dl.Snapshot() {
		t.Fatalf("%d delivery events after connection losses, e.g. %s %s: %v", dl.Len(), e.Action, e.MessageID, e.Err)
	}
	handled.WaitDistinct(t, len(ids), 30*time.Second)
}

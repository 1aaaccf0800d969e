//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// publishWithUUID publishes a JSON envelope with a fixed message uuid, as
// a sender retrying a publish would (hato's Publish makes a new one).
func publishWithUUID(t *testing.T, p *hato.Service, key, uuid, id string) {
	t.Helper()
	body, err := envelope.JSON.Build(envelope.Build{
		Service: envelope.Service{Name: "dedupe-sender", UUID: "sender"}, Topic: key, MessageUUID: uuid, Time: time.Now(),
	}, map[string]any{"id": id}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, body, key, hato.Envelope(envelope.Raw)); err != nil {
		t.Fatal(err)
	}
}

// waitSettled waits until the queue holds nothing, ready or unacked.
func waitSettled(t *testing.T, queue string) {
	t.Helper()
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		q, ok, err := brokertest.FindQueue(brokerVhost(t), queue)
		return err == nil && ok && q.Messages == 0 && q.MessagesUnacknowledged == 0
	}, "queue %s empty, nothing unacked", queue)
}

// countingStore wraps a store, counting records and running check (if
// set) at each one.
type countingStore struct {
	hato.DedupStore
	records atomic.Int64
	check   func()
}

func (c *countingStore) Record(ctx context.Context, key string, ttl time.Duration) error {
	if c.check != nil {
		c.check()
	}
	c.records.Add(1)
	return c.DedupStore.Record(ctx, key, ttl)
}

// The same message uuid published twice is handled once; both copies are
// acked and the duplicate is counted and reported.
func TestDedupeHandlesOnceAndAcksBoth(t *testing.T) {
	key := testutil.Key(t, "dedupe")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "dedupe", hato.WithDeliveryEvents(evs.Add))
	var mu sync.Mutex
	var handled []string
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		handled = append(handled, m.Data.ID)
		mu.Unlock()
		return nil
	}, hato.Dedupe(time.Minute, nil))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-a", "a1")
	publishWithUUID(t, p, key, "uuid-a", "a2")
	publishWithUUID(t, p, key, "uuid-b", "b")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 2 && svc.DedupeStats().Duplicates == 1
	}, "two handled, one duplicate")
	waitSettled(t, routeQueue(t, svc, 0))

	mu.Lock()
	got := append([]string(nil), handled...)
	mu.Unlock()
	if len(got) != 2 || got[0] != "a1" || got[1] != "b" {
		t.Fatalf("handled %v, want [a1 b]", got)
	}
	evList := evs.Snapshot()
	if len(evList) != 1 || evList[0].Action != hato.ActionDuplicate || evList[0].Attempts != 0 {
		t.Fatalf("events %+v, want one duplicate", evList)
	}
	if st := svc.DedupeStats(); st.Duplicates != 1 || st.StoreErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A failed attempt records nothing: the message is recorded once, after
// the retry that succeeded, and only then is a copy a duplicate.
func TestDedupeRecordsOnlyAfterSuccess(t *testing.T) {
	key := testutil.Key(t, "dedupe-retry")
	var calls atomic.Int64
	store := &countingStore{DedupStore: hato.NewMemoryDedupStore(0)}
	store.check = func() {
		if n := calls.Load(); n != 2 {
			t.Errorf("recorded after %d handler calls, want after the second (the success)", n)
		}
	}
	svc := newService(t, "dedupe-retry")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if calls.Add(1) == 1 {
			return errors.New("first attempt fails")
		}
		return nil
	}, hato.Dedupe(time.Minute, store), hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1},
	}))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-retry", "1")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return store.records.Load() == 1 }, "the success recorded")
	publishWithUUID(t, p, key, "uuid-retry", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the copy skipped")
	waitSettled(t, routeQueue(t, svc, 0))
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (a failure, a success; the copy skipped)", n)
	}
	if n := store.records.Load(); n != 1 {
		t.Fatalf("%d records, want 1", n)
	}
}

// A handler's publishes must be confirmed before its message is recorded:
// an attempt whose publish failed records nothing, and the record of the
// one that succeeded comes after the broker confirmed its publish.
func TestDedupeRecordsAfterPublishesConfirmed(t *testing.T) {
	key := testutil.Key(t, "dedupe-pub")
	onward := testutil.Key(t, "dedupe-onward")
	unroutable := testutil.Key(t, "dedupe-nowhere")
	conn := brokertest.Dial(t, brokerURL(t), "test-dedupe-pub")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(onward, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(onward, onward, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}

	var calls atomic.Int64
	store := &countingStore{DedupStore: hato.NewMemoryDedupStore(0)}
	store.check = func() {
		if n, _, err := brokertest.InspectQueue(conn, onward); err != nil || n != 1 {
			t.Errorf("recorded with %d messages in the onward queue (err %v), want its confirmed publish there", n, err)
		}
	}
	svc := newService(t, "dedupe-pub")
	var svcRef atomic.Pointer[hato.Service]
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		to := onward
		if calls.Add(1) == 1 {
			to = unroutable // the publish fails after the handler returned
		}
		return svcRef.Load().Publish(ctx, map[string]any{"id": "onward"}, to, hato.Mandatory())
	}, hato.Dedupe(time.Minute, store), hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 1},
	}))
	svcRef.Store(svc)
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-pub", "1")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return store.records.Load() == 1 }, "the success recorded")
	publishWithUUID(t, p, key, "uuid-pub", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the copy skipped")
	waitSettled(t, routeQueue(t, svc, 0))
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
}

// errStore fails every call.
type errStore struct{}

func (errStore) Seen(context.Context, string) (bool, error) { return false, errors.New("store down") }
func (errStore) Record(context.Context, string, time.Duration) error {
	return errors.New("store down")
}

// A store that fails leaves de-duplication off (fail open): both copies
// are handled and acked, and the errors are counted.
func TestDedupeStoreErrorFailsOpen(t *testing.T) {
	key := testutil.Key(t, "dedupe-err")
	var calls atomic.Int64
	svc := newService(t, "dedupe-err", hato.Dedupe(time.Minute, errStore{}))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		calls.Add(1)
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-err", "1")
	publishWithUUID(t, p, key, "uuid-err", "2")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		return calls.Load() == 2 && svc.DedupeStats().StoreErrors == 4
	}, "both handled, four store errors (two lookups, two records)")
	waitSettled(t, routeQueue(t, svc, 0))
	if st := svc.DedupeStats(); st.Duplicates != 0 {
		t.Fatalf("stats %+v, want no duplicate", st)
	}
}

// Two copies in flight at once (Concurrency 2): the second waits for the
// first instead of running alongside it, then is skipped as a duplicate.
func TestDedupeCopiesInFlightRunOnce(t *testing.T) {
	key := testutil.Key(t, "dedupe-conc")
	var calls atomic.Int64
	release := make(chan struct{})
	svc := newService(t, "dedupe-conc")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		calls.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, hato.Dedupe(time.Minute, nil), hato.Concurrency(2))
	testutil.Start(t, svc)
	p := publisher(t)

	publishWithUUID(t, p, key, "uuid-conc", "1")
	publishWithUUID(t, p, key, "uuid-conc", "2")
	// Both copies are delivered to the route (none ready in the queue)
	// while the first handler is held.
	queue := routeQueue(t, svc, 0)
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		q, ok, err := brokertest.FindQueue(brokerVhost(t), queue)
		return err == nil && ok && q.MessagesUnacknowledged == 2 && calls.Load() == 1
	}, "both copies delivered, one handler running")
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d handlers ran for one uuid", n)
	}
	close(release)
	brokertest.WaitFor(t, 30*time.Second, func() bool { return svc.DedupeStats().Duplicates == 1 }, "the second copy skipped")
	waitSettled(t, queue)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

package hato

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// fakeClock is a settable clock for the memory store.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestStore(max int) (*MemoryDedupeStore, *fakeClock) {
	clock := &fakeClock{now: time.Unix(1000, 0)}
	m := NewMemoryDedupeStore(max)
	m.now = clock.Now
	return m, clock
}

func seen(t *testing.T, s DedupeStore, key string) bool {
	t.Helper()
	ok, err := s.Seen(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func record(t *testing.T, s DedupeStore, key string, ttl time.Duration) {
	t.Helper()
	if err := s.Record(context.Background(), key, ttl); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryDedupeStoreTTL(t *testing.T) {
	s, clock := newTestStore(10)
	if seen(t, s, "a") {
		t.Fatal("unrecorded key seen")
	}
	record(t, s, "a", time.Minute)
	clock.Advance(59 * time.Second)
	if !seen(t, s, "a") {
		t.Fatal("key not seen within its ttl")
	}
	clock.Advance(time.Second)
	if seen(t, s, "a") {
		t.Fatal("key seen once its ttl passed")
	}
	if s.Len() != 0 {
		t.Fatalf("expired key kept: %d keys", s.Len())
	}
	// Recording again restarts the ttl.
	record(t, s, "b", time.Minute)
	clock.Advance(50 * time.Second)
	record(t, s, "b", time.Minute)
	clock.Advance(50 * time.Second)
	if !seen(t, s, "b") {
		t.Fatal("re-recorded key forgotten at its first ttl")
	}
}

func TestMemoryDedupeStoreBound(t *testing.T) {
	s, clock := newTestStore(3)
	for _, k := range []string{"a", "b", "c"} {
		record(t, s, k, time.Hour)
	}
	record(t, s, "a", time.Hour) // a is now the most recently recorded
	record(t, s, "d", time.Hour) // full: b goes
	if s.Len() != 3 {
		t.Fatalf("%d keys, want the bound 3", s.Len())
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := seen(t, s, k); got != want {
			t.Errorf("seen(%s) = %v, want %v", k, got, want)
		}
	}
	// Expired keys at the front are removed as new ones come.
	s, clock = newTestStore(3)
	record(t, s, "e1", time.Second)
	record(t, s, "e2", time.Second)
	record(t, s, "live", time.Hour)
	clock.Advance(2 * time.Second)
	record(t, s, "new", time.Hour)
	if s.Len() != 2 || !seen(t, s, "live") || !seen(t, s, "new") {
		t.Fatalf("%d keys, want live and new only", s.Len())
	}
	if got := NewMemoryDedupeStore(0).max; got != DefaultDedupeEntries {
		t.Fatalf("default bound %d, want %d", got, DefaultDedupeEntries)
	}
}

func TestMemoryDedupeStoreConcurrent(t *testing.T) {
	const max = 50
	s := NewMemoryDedupeStore(max)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				k := fmt.Sprintf("%d-%d", g, i%100)
				_ = s.Record(context.Background(), k, time.Hour)
				_, _ = s.Seen(context.Background(), k)
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n != max {
		t.Fatalf("%d keys after 800 distinct records, want the bound %d", n, max)
	}
}

// errStore fails every call.
type errStore struct{ calls atomic.Int64 }

func (e *errStore) Seen(context.Context, string) (bool, error) {
	e.calls.Add(1)
	return false, errors.New("store down")
}
func (e *errStore) Record(context.Context, string, time.Duration) error {
	e.calls.Add(1)
	return errors.New("store down")
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func testDeduper(store DedupeStore) (*deduper, *dedupeCounters) {
	c := &dedupeCounters{}
	return &deduper{store: store, window: time.Minute, lease: DefaultDedupeLease, queue: "q", route: "r", log: zap.NewNop(),
		counters: c, inflight: map[string]chan struct{}{}}, c
}

func TestDeduperRun(t *testing.T) {
	ctx := context.Background()
	d := &broker.Delivery{}
	d.MessageId = "amqp-id"
	store := NewMemoryDedupeStore(10)
	dd, counters := testDeduper(store)
	var runs int
	handle := func(context.Context) error { runs++; return nil }
	fail := func(context.Context) error { runs++; return errors.New("boom") }

	if err := dd.run(ctx, "u1", d, fail); err == nil {
		t.Fatal("failure swallowed")
	}
	if seen(t, store, "q/u1") {
		t.Fatal("a failed attempt was recorded")
	}
	for range 2 {
		if err := dd.run(ctx, "u1", d, handle); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 2 || counters.duplicates.Load() != 1 {
		t.Fatalf("runs %d duplicates %d, want 2 and 1", runs, counters.duplicates.Load())
	}
	// No envelope uuid: the AMQP message id is the key.
	_ = dd.run(ctx, "", d, handle)
	_ = dd.run(ctx, "", d, handle)
	if !seen(t, store, "q/amqp-id") || runs != 3 {
		t.Fatalf("message id not used as the key: runs %d", runs)
	}
	// Neither: always handled.
	bare := &broker.Delivery{}
	_ = dd.run(ctx, "", bare, handle)
	_ = dd.run(ctx, "", bare, handle)
	if runs != 5 {
		t.Fatalf("runs %d, want 5: a message without id must always be handled", runs)
	}
}

func TestDeduperFailsOpen(t *testing.T) {
	store := &errStore{}
	dd, counters := testDeduper(store)
	var runs int
	for range 2 {
		if err := dd.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { runs++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 2 {
		t.Fatalf("runs %d, want 2 (fail open)", runs)
	}
	// Records run on their own goroutine once the delivery settled.
	waitUntil(t, func() bool { return counters.storeErrors.Load() == 4 }, "4 store errors (two lookups, two records)")
}

// A second copy in flight waits for the first and is then a duplicate; a
// panicking handler releases its claim.
func TestDeduperInFlight(t *testing.T) {
	dd, counters := testDeduper(NewMemoryDedupeStore(10))
	entered, finish := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- dd.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error {
			close(entered)
			<-finish
			return nil
		})
	}()
	<-entered
	second := make(chan error, 1)
	var secondRan atomic.Bool
	go func() {
		second <- dd.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { secondRan.Store(true); return nil })
	}()
	select {
	case err := <-second:
		t.Fatalf("second copy finished while the first was in flight: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(finish)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if secondRan.Load() || counters.duplicates.Load() != 1 {
		t.Fatalf("second ran %v, duplicates %d: want a duplicate", secondRan.Load(), counters.duplicates.Load())
	}

	// A waiting copy gives up when its context ends.
	hold := make(chan struct{})
	entered2 := make(chan struct{})
	go func() {
		_ = dd.run(context.Background(), "v", &broker.Delivery{}, func(context.Context) error { close(entered2); <-hold; return errors.New("x") })
	}()
	<-entered2
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := dd.run(ctx, "v", &broker.Delivery{}, func(context.Context) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting copy returned %v, want context.Canceled", err)
	}
	close(hold)

	// Panic releases the claim.
	func() {
		defer func() { _ = recover() }()
		_ = dd.run(context.Background(), "p", &broker.Delivery{}, func(context.Context) error { panic("boom") })
	}()
	ran := false
	_ = dd.run(context.Background(), "p", &broker.Delivery{}, func(context.Context) error { ran = true; return nil })
	if !ran {
		t.Fatal("the copy after a panic was not handled")
	}
}

package hato

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato/broker"
)

// claimStore is an in-process DedupeClaimer for unit tests; the real ones
// (dedupe/redisstore, dedupe/pgstore) are tested against their servers.
type claimStore struct {
	mu      sync.Mutex
	now     time.Time
	entries map[string]claimEntry
	claims  atomic.Int64 // Claim calls
}

type claimEntry struct {
	owner   string // "" when done
	expires time.Time
}

func newClaimStore() *claimStore {
	return &claimStore{now: time.Unix(1000, 0), entries: map[string]claimEntry{}}
}

func (c *claimStore) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func (c *claimStore) live(key string) (claimEntry, bool) {
	e, ok := c.entries[key]
	if ok && !c.now.Before(e.expires) {
		delete(c.entries, key)
		return e, false
	}
	return e, ok
}

func (c *claimStore) Seen(_ context.Context, key string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(key)
	return ok && e.owner == "", nil
}

func (c *claimStore) Record(_ context.Context, key string, ttl time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[key] = claimEntry{expires: c.now.Add(ttl)}
	return nil
}

func (c *claimStore) Claim(_ context.Context, key, owner string, lease time.Duration) (ClaimState, error) {
	c.claims.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(key)
	switch {
	case ok && e.owner == "":
		return ClaimDone, nil
	case ok && e.owner != owner:
		return ClaimHeld, nil
	}
	c.entries[key] = claimEntry{owner: owner, expires: c.now.Add(lease)}
	return ClaimTaken, nil
}

func (c *claimStore) Release(_ context.Context, key, owner string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.owner == owner {
		delete(c.entries, key)
	}
	return nil
}

func (c *claimStore) state(key string) (claimEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live(key)
}

// Two nodes (two dedupers, one shared store): a copy on node B while node A
// handles the message waits, then is a duplicate once A recorded it.
func TestDeduperClaimAcrossNodes(t *testing.T) {
	store := newClaimStore()
	a, ca := testDeduper(store)
	b, cb := testDeduper(store)
	entered, finish := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- a.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { close(entered); <-finish; return nil })
	}()
	<-entered
	second := make(chan error, 1)
	var ranB atomic.Bool
	go func() {
		second <- b.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { ranB.Store(true); return nil })
	}()
	// B polls the held claim.
	waitUntil(t, func() bool { return store.claims.Load() >= 3 }, "B to poll the claim")
	close(finish)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if ranB.Load() || cb.duplicates.Load() != 1 || ca.duplicates.Load() != 0 {
		t.Fatalf("B ran %v, duplicates A %d B %d: want B a duplicate", ranB.Load(), ca.duplicates.Load(), cb.duplicates.Load())
	}
}

// A failed handler releases its claim: the redelivery on another node runs
// at once; and the done mark is kept by a later Claim.
func TestDeduperClaimReleasedOnFailure(t *testing.T) {
	store := newClaimStore()
	a, _ := testDeduper(store)
	b, _ := testDeduper(store)
	if err := a.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { return errors.New("boom") }); err == nil {
		t.Fatal("failure swallowed")
	}
	if _, ok := store.state("q/u"); ok {
		t.Fatal("claim kept after the handler failed")
	}
	ran := false
	if err := b.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("redelivery: ran %v err %v", ran, err)
	}
	waitUntil(t, func() bool { e, ok := store.state("q/u"); return ok && e.owner == "" }, "the done mark")
}

// A node that died holding a claim: its lease expires, then another node
// handles the message.
func TestDeduperClaimLeaseExpires(t *testing.T) {
	store := newClaimStore()
	if st, _ := store.Claim(context.Background(), "q/u", "dead-node", time.Second); st != ClaimTaken {
		t.Fatal("setup claim not taken")
	}
	b, _ := testDeduper(store)
	b.lease = 300 * time.Millisecond // polls at most every lease/3
	done := make(chan error, 1)
	var ran atomic.Bool
	go func() {
		done <- b.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { ran.Store(true); return nil })
	}()
	waitUntil(t, func() bool { return store.claims.Load() >= 3 }, "B to poll the held claim")
	if ran.Load() {
		t.Fatal("ran while another node held the claim")
	}
	store.advance(time.Second)
	if err := <-done; err != nil || !ran.Load() {
		t.Fatalf("after the lease expired: ran %v err %v", ran.Load(), err)
	}
}

// A handler running longer than the lease keeps its claim (renewed every
// lease/3), so no other node takes the message over.
func TestDeduperClaimRenewed(t *testing.T) {
	store := newClaimStore()
	a, _ := testDeduper(store)
	a.lease = 30 * time.Millisecond
	finish := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- a.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { <-finish; return nil })
	}()
	// Each renewal is a Claim by the same owner; the fake clock does not
	// move, so only the count shows them.
	waitUntil(t, func() bool { return store.claims.Load() >= 4 }, "three renewals")
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { e, ok := store.state("q/u"); return ok && e.owner == "" }, "the done mark")
	n := store.claims.Load()
	time.Sleep(100 * time.Millisecond) // renewals must have stopped: count stays
	if store.claims.Load() != n {
		t.Fatal("claim renewed after the message was recorded")
	}
}

// A store that fails fails open: the handler runs, the error is counted.
func TestDeduperClaimFailsOpen(t *testing.T) {
	dd, counters := testDeduper(failingClaimer{&errStore{}})
	ran := false
	if err := dd.run(context.Background(), "u", &broker.Delivery{}, func(context.Context) error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("ran %v err %v", ran, err)
	}
	waitUntil(t, func() bool { return counters.storeErrors.Load() == 2 }, "claim and record errors")
}

type failingClaimer struct{ *errStore }

func (failingClaimer) Claim(context.Context, string, string, time.Duration) (ClaimState, error) {
	return 0, errors.New("store down")
}
func (failingClaimer) Release(context.Context, string, string) error { return errors.New("store down") }

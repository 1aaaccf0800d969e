// Package dedupetest checks a hato.DedupeClaimer against the claim protocol
// (Conformance) and runs the fleet crash test shared by the stores' modules
// (Crash). It needs no driver: each store module passes its own store and
// node binary.
package dedupetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
)

// Conformance runs the claim protocol against a fresh store from newStore
// (keys it uses are unique to the call).
func Conformance(t *testing.T, newStore func(t *testing.T) hato.DedupeClaimer) {
	ctx := context.Background()
	key := func(t *testing.T) string { return fmt.Sprintf("q/%s-%d", t.Name(), time.Now().UnixNano()) }
	must := func(t *testing.T, got hato.ClaimState, err error, want hato.ClaimState) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("claim state %d, want %d", got, want)
		}
	}
	t.Run("ClaimHeldReleaseDone", func(t *testing.T) {
		s, k := newStore(t), key(t)
		st, err := s.Claim(ctx, k, "a", time.Minute)
		must(t, st, err, hato.ClaimTaken)
		st, err = s.Claim(ctx, k, "b", time.Minute)
		must(t, st, err, hato.ClaimHeld)
		st, err = s.Claim(ctx, k, "a", time.Minute) // renewal
		must(t, st, err, hato.ClaimTaken)
		if err := s.Release(ctx, k, "b"); err != nil { // not b's: stays
			t.Fatal(err)
		}
		st, err = s.Claim(ctx, k, "b", time.Minute)
		must(t, st, err, hato.ClaimHeld)
		if err := s.Release(ctx, k, "a"); err != nil {
			t.Fatal(err)
		}
		st, err = s.Claim(ctx, k, "b", time.Minute)
		must(t, st, err, hato.ClaimTaken)
		if seen, err := s.Seen(ctx, k); err != nil || seen {
			t.Fatalf("claimed key seen (%v, %v)", seen, err)
		}
		if err := s.Record(ctx, k, time.Minute); err != nil {
			t.Fatal(err)
		}
		st, err = s.Claim(ctx, k, "b", time.Minute) // even by its owner
		must(t, st, err, hato.ClaimDone)
		if err := s.Release(ctx, k, "b"); err != nil {
			t.Fatal(err)
		}
		if seen, err := s.Seen(ctx, k); err != nil || !seen {
			t.Fatalf("recorded key not seen after a release (%v, %v)", seen, err)
		}
	})
	t.Run("LeaseExpires", func(t *testing.T) {
		s, k := newStore(t), key(t)
		st, err := s.Claim(ctx, k, "dead", 50*time.Millisecond)
		must(t, st, err, hato.ClaimTaken)
		waitState(t, s, k, "b", hato.ClaimTaken)
	})
	t.Run("RecordExpires", func(t *testing.T) {
		s, k := newStore(t), key(t)
		if err := s.Record(ctx, k, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		waitState(t, s, k, "b", hato.ClaimTaken)
	})
	t.Run("OneWinner", func(t *testing.T) { oneWinner(t, newStore(t), key(t)) })
}

// waitState polls Claim until it returns want (a lease or ttl passing).
func waitState(t *testing.T, s hato.DedupeClaimer, k, owner string, want hato.ClaimState) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.Claim(context.Background(), k, owner, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("claim state %d, want %d after the expiry", st, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// oneWinner: 16 owners claim one key at once; exactly one takes it.
func oneWinner(t *testing.T, s hato.DedupeClaimer, k string) {
	const n = 16
	var wg sync.WaitGroup
	states := make([]hato.ClaimState, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			states[i], errs[i] = s.Claim(context.Background(), k, fmt.Sprint("owner", i), time.Minute)
		}()
	}
	close(start)
	wg.Wait()
	taken := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if states[i] == hato.ClaimTaken {
			taken++
		}
	}
	if taken != 1 {
		t.Fatalf("%d owners took the claim, want 1 (states %v)", taken, states)
	}
}

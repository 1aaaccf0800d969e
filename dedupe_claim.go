package hato

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// ClaimState is what DedupeClaimer.Claim found for a key.
type ClaimState int

const (
	// ClaimTaken: the caller holds the claim now (new, renewed, or taken
	// over from a holder whose lease expired).
	ClaimTaken ClaimState = iota + 1
	// ClaimHeld: another owner holds an unexpired claim on the key.
	ClaimHeld
	// ClaimDone: the key was recorded (Record) and its ttl has not passed:
	// the message is a duplicate.
	ClaimDone
)

// DefaultDedupeLease is how long a claim on a DedupeClaimer lasts unless
// renewed (see DedupeOption.Lease).
const DefaultDedupeLease = 30 * time.Second

// DedupeClaimer is a DedupeStore shared by several nodes that closes the
// window between "seen" and "recorded": before a handler runs, hato claims
// the message's key with a lease, so two nodes that receive copies at the
// same moment do not both run it. Stores in hato's dedupe/redisstore and
// dedupe/pgstore modules implement it; a DedupeStore that does not keeps
// today's behaviour (Seen, then Record).
//
// Every method must be safe for concurrent use, atomic in the shared
// store, and honour ctx (hato bounds each call by DedupeStoreTimeout).
// Errors fail open as for DedupeStore.
//
// The protocol hato follows (owner is unique to one copy of a message):
//
//   - Claim before the handler. ClaimDone: the copy is acked as a
//     duplicate. ClaimHeld: the copy waits, polling Claim, until the claim
//     is released, expires (its holder died) or becomes done.
//   - While the handler and its publishes run, Claim again by the same
//     owner every lease/3 to renew the lease.
//   - Handler or publish failed: Release, so a redelivery runs at once.
//   - Success: Record(key, window) replaces the claim by a done mark.
type DedupeClaimer interface {
	DedupeStore
	// Claim takes key for owner for lease unless another owner holds an
	// unexpired claim (ClaimHeld) or the key is recorded (ClaimDone). A
	// claim already owner's is renewed (ClaimTaken). Claim never replaces
	// a done mark.
	Claim(ctx context.Context, key, owner string, lease time.Duration) (ClaimState, error)
	// Release drops owner's claim on key; a claim of another owner or a
	// done mark stays.
	Release(ctx context.Context, key, owner string) error
}

// Lease sets how long a claim on a DedupeClaimer store lasts unless hato
// renews it (every lease/3 while the message is handled): the longest a
// crashed node's messages wait before another node handles them. Zero or
// less means DefaultDedupeLease. No effect on a store that is not a
// DedupeClaimer.
func (o DedupeOption) Lease(d time.Duration) DedupeOption {
	o.lease = d
	return o
}

// claimPollMax caps the wait between two Claims of a copy that finds the key
// held by another node.
const claimPollMax = time.Second

// runClaimed is run for a store that is a DedupeClaimer, once the key is
// claimed in this process (release drops that).
func (dd *deduper) runClaimed(ctx context.Context, c DedupeClaimer, key string, d *broker.Delivery,
	handle func() error, release func()) error {
	owner := envelope.NewUUID4()
	st, err := dd.acquire(ctx, c, key, owner)
	if err != nil {
		release()
		return err
	}
	if st == ClaimDone {
		release()
		afterAck(ctx, func() { dd.duplicate(key, d) })
		return nil
	}
	stop := dd.keepClaim(c, key, owner)
	unclaim := func() {
		stop()
		dd.releaseClaim(c, key, owner)
	}
	handled := false
	defer func() {
		if !handled { // failed or panicked: let a redelivery run at once
			unclaim()
			release()
		}
	}()
	if err := handle(); err != nil {
		return err
	}
	handled = true
	dd.settle(ctx, key, &heldClaim{stop: stop, unclaim: unclaim}, release)
	return nil
}

// acquire claims key for owner, waiting while another node holds it. It
// returns ClaimTaken or ClaimDone; an error only when ctx ends. A failing
// store fails open (ClaimTaken).
func (dd *deduper) acquire(ctx context.Context, c DedupeClaimer, key, owner string) (ClaimState, error) {
	wait := 20 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, DedupeStoreTimeout)
		st, err := c.Claim(cctx, key, owner, dd.lease)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			dd.storeFailed("dedupe store claim failed; handling the message", key, err)
			return ClaimTaken, nil
		}
		if st != ClaimHeld {
			return st, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		}
		wait = min(2*wait, claimPollMax, dd.lease/3)
	}
}

// keepClaim renews owner's claim every lease/3 on a timer goroutine until
// the returned stop is called. stop waits for a renewal in progress, so no
// renewal runs after it returned (one would re-create a released claim).
func (dd *deduper) keepClaim(c DedupeClaimer, key, owner string) (stop func()) {
	var (
		mu      sync.Mutex
		t       *time.Timer
		stopped bool
	)
	every := dd.lease / 3
	var renew func()
	renew = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), DedupeStoreTimeout)
		st, err := c.Claim(ctx, key, owner, dd.lease)
		cancel()
		switch {
		case err != nil:
			dd.storeFailed("dedupe claim renewal failed; another node may handle the message too", key, err)
		case st == ClaimHeld: // ClaimDone: the handler recorded it (RecordTx)
			dd.log.Warn("dedupe claim lost while handling; another node may handle the message too",
				zap.String("dedupe_key", key))
		}
		t = time.AfterFunc(every, renew)
	}
	mu.Lock()
	t = time.AfterFunc(every, renew)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			stopped = true
			t.Stop()
		}
	}
}

func (dd *deduper) releaseClaim(c DedupeClaimer, key, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), DedupeStoreTimeout)
	defer cancel()
	if err := c.Release(ctx, key, owner); err != nil {
		dd.storeFailed("dedupe claim release failed; a redelivery waits for the lease to expire", key, err)
	}
}

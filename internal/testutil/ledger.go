package testutil

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/brokertest"
)

// Ledger accounts for every message of a fault or cluster scenario: the
// ids to publish, which publishes were attempted, confirmed or failed, and
// which ids a handler recorded (Handled). A confirmed id never handled is
// lost.
type Ledger struct {
	t       testing.TB
	IDs     []string
	Handled *Collector
	// OnConfirm, when set, is called after each publish the broker
	// confirmed (e.g. to record when).
	OnConfirm func()

	confirmed sync.Map // id → true
	nConf     atomic.Int64
	attempted atomic.Int64
	failed    atomic.Int64
}

// NewLedger is a ledger of n ids ("m0" …) for t.
func NewLedger(t testing.TB, n int) *Ledger {
	return &Ledger{t: t, IDs: IDs("m", n), Handled: NewCollector()}
}

// Publish publishes id to key through p and records the outcome; the first
// five failures are logged.
func (l *Ledger) Publish(p *hato.Service, key, id string) error {
	l.attempted.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Publish(ctx, map[string]string{"id": id}, key); err != nil {
		if l.failed.Add(1) <= 5 {
			l.t.Logf("publish %s: %v", id, err)
		}
		return err
	}
	l.confirmed.Store(id, true)
	l.nConf.Add(1)
	if l.OnConfirm != nil {
		l.OnConfirm()
	}
	return nil
}

// PublishAll publishes every id to key from 4 goroutines, rate per second
// in all (0: as fast as confirms allow), and closes the channel it returns
// once every call returned.
func (l *Ledger) PublishAll(p *hato.Service, key string, rate int) <-chan struct{} {
	done := make(chan struct{})
	const workers = 4
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	begin := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(l.IDs); i += workers {
				if interval > 0 {
					time.Sleep(time.Until(begin.Add(time.Duration(i) * interval))) // pacing, not waiting for a condition
				}
				_ = l.Publish(p, key, l.IDs[i])
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return done
}

// Forget takes id out of the confirmed ones (a message not meant to be
// handled, such as poison).
func (l *Ledger) Forget(id string) { l.confirmed.Delete(id) }

// Reset forgets every publish (not what was handled), for a second phase
// with new IDs.
func (l *Ledger) Reset() {
	l.attempted.Store(0)
	l.confirmed.Clear()
	l.nConf.Store(0)
}

// Attempted, Confirmed and Failed count the publishes.
func (l *Ledger) Attempted() int64 { return l.attempted.Load() }
func (l *Ledger) Confirmed() int64 { return l.nConf.Load() }
func (l *Ledger) Failed() int64    { return l.failed.Load() }

// WaitConfirmed waits until a fraction of the ids was confirmed.
func (l *Ledger) WaitConfirmed(fraction float64) {
	l.t.Helper()
	want := int64(float64(len(l.IDs)) * fraction)
	brokertest.WaitFor(l.t, 2*time.Minute, func() bool { return l.nConf.Load() >= want }, "%d confirmed publishes", want)
}

// WaitPublished waits for the publishers, failing after 3 minutes.
func (l *Ledger) WaitPublished(done <-chan struct{}) {
	l.t.Helper()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		l.t.Fatalf("publishers did not finish (%d of %d confirmed)", l.nConf.Load(), len(l.IDs))
	}
}

// Settle waits until every confirmed id was handled (or the timeout).
func (l *Ledger) Settle(timeout time.Duration) {
	_ = brokertest.Eventually(timeout, func() bool { return l.Lost() == 0 })
}

// Lost is how many confirmed ids were never handled.
func (l *Ledger) Lost() int { return len(l.LostIDs(-1)) }

// LostIDs returns up to max (negative: all) confirmed ids never handled,
// sorted.
func (l *Ledger) LostIDs(max int) []string {
	var out []string
	l.confirmed.Range(func(k, _ any) bool {
		if l.Handled.Count(k.(string)) == 0 {
			out = append(out, k.(string))
		}
		return max < 0 || len(out) < max
	})
	sort.Strings(out)
	return out
}

// Tally is a ledger's account of its ids, the columns every fault and
// cluster scenario's row starts with.
type Tally struct {
	Published  int // publishes attempted
	Confirmed  int
	Handled    int // distinct ids handled
	Lost       int // confirmed, never handled
	Duplicates int // handlings beyond the first of an id
}

// Tally accounts for the ids now.
func (l *Ledger) Tally() Tally {
	return Tally{
		Published:  int(l.Attempted()),
		Confirmed:  int(l.Confirmed()),
		Handled:    l.Handled.Distinct(),
		Lost:       l.Lost(),
		Duplicates: l.Handled.Total() - l.Handled.Distinct(),
	}
}

// Check fails t on a lost message and on a publish not confirmed.
func (l *Ledger) Check(t testing.TB, tally Tally) {
	t.Helper()
	if tally.Lost > 0 {
		t.Errorf("%d confirmed messages never handled, e.g. %v", tally.Lost, l.LostIDs(5))
	}
	if tally.Confirmed != len(l.IDs) {
		t.Errorf("only %d of %d publishes confirmed (%d errors)", tally.Confirmed, len(l.IDs), l.Failed())
	}
}

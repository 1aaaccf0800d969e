package actors

import (
	"errors"
	"testing"
)

// AfterSettle callbacks run once, after the consumer's own, with the
// publishes' outcome; none can be registered once the handler returned.
func TestTrackerAfterSettle(t *testing.T) {
	var order []string
	tr := newTracker(1, true, func(err error) { order = append(order, "consumer") })
	var got error
	if !tr.AfterSettle(func(err error) { order = append(order, "after"); got = err }) {
		t.Fatal("AfterSettle refused before seal")
	}
	if !tr.Add() {
		t.Fatal("Add refused before seal")
	}
	tr.seal()
	if len(order) != 0 {
		t.Fatalf("settled with a publish pending: %v", order)
	}
	if tr.AfterSettle(func(error) { t.Error("ran after seal") }) {
		t.Fatal("AfterSettle accepted after seal")
	}
	boom := errors.New("nacked")
	tr.Done(boom)
	if len(order) != 2 || order[0] != "consumer" || order[1] != "after" {
		t.Fatalf("order %v, want [consumer after]", order)
	}
	if !errors.Is(got, boom) {
		t.Fatalf("after got %v, want %v", got, boom)
	}
}

// finish: nothing pending settles at once without the settle callback (the
// worker reports both outcomes in one message); a publish pending makes it
// call pending and leave the settle callback to the last Done; after a
// failed handler the settle callback is skipped and AfterSettle still runs.
func TestTrackerFinish(t *testing.T) {
	calls := 0
	tr := newTracker(1, true, func(error) { calls++ })
	if settled, err := tr.finish(true, func() { t.Error("pending called with nothing pending") }); !settled || err != nil {
		t.Fatalf("finish = %v, %v; want settled", settled, err)
	}
	if calls != 0 {
		t.Fatalf("settle callback ran %d times at finish", calls)
	}

	tr = newTracker(1, true, func(error) { calls++ })
	tr.Add()
	pending := 0
	if settled, _ := tr.finish(true, func() { pending++ }); settled || pending != 1 {
		t.Fatalf("finish settled=%v, pending called %d times; want unsettled, once", settled, pending)
	}
	tr.Done(nil)
	if calls != 1 {
		t.Fatalf("settle callback ran %d times after the last Done, want 1", calls)
	}

	calls = 0
	tr = newTracker(1, true, func(error) { calls++ })
	after := 0
	tr.AfterSettle(func(error) { after++ })
	tr.Add()
	tr.finish(false, func() {})
	tr.Done(nil)
	if calls != 0 || after != 1 {
		t.Fatalf("failed handler: settle callback %d, AfterSettle %d; want 0, 1", calls, after)
	}
}

// A tracker with telemetry's and dedupe's callbacks allocates nothing
// more than itself: go test -bench TrackerAfterSettle -benchmem ./actors.
func BenchmarkTrackerAfterSettle(b *testing.B) {
	settled, after := func(error) {}, func(error) {}
	b.ReportAllocs()
	for b.Loop() {
		tr := newTracker(1, true, settled)
		tr.AfterSettle(after)
		tr.AfterSettle(after)
		tr.seal()
	}
}

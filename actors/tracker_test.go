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

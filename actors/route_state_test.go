package actors

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// A record forgotten and created again is one live record: the stale
// entry left behind must not evict it when the state fills up.
func TestRouteStateEvictsNoLiveRecord(t *testing.T) {
	s := newRouteState(2)
	a := messageKey(delivery("a", "body-a"))
	b := messageKey(delivery("b", "body-b"))
	s.mark(a)
	s.forget(a)
	s.mark(a) // a again: live, one crash
	s.mark(b) // two live records: exactly the limit
	if n := s.count(a); n != 1 {
		t.Fatalf("live record a evicted at the limit: count %d, want 1", n)
	}
	if n := s.count(b); n != 1 {
		t.Fatalf("count(b) = %d, want 1", n)
	}
}

// Forgetting and re-creating keys many times keeps the memory bounded by
// live records, not by how often a key came and went, and the oldest live
// record is the one evicted.
func TestRouteStateBoundedByLiveRecords(t *testing.T) {
	s := newRouteState(3)
	k0, k1, k2, k3 := messageKey(delivery("a", "x")), messageKey(delivery("b", "x")), messageKey(delivery("c", "x")), messageKey(delivery("d", "x"))
	for range 100 {
		s.mark(k0)
		s.forget(k0)
	}
	s.mark(k0)
	s.mark(k1)
	s.mark(k2)
	for _, k := range []struct {
		name string
		n    int
	}{{"k0", s.count(k0)}, {"k1", s.count(k1)}, {"k2", s.count(k2)}} {
		if k.n != 1 {
			t.Fatalf("%s count %d, want 1 (three live records, limit 3)", k.name, k.n)
		}
	}
	s.mark(k3) // evicts the oldest live record, k0
	if s.count(k0) != 0 || s.count(k1) != 1 || s.count(k2) != 1 || s.count(k3) != 1 {
		t.Fatalf("after a fourth record: k0=%d k1=%d k2=%d k3=%d, want 0 1 1 1",
			s.count(k0), s.count(k1), s.count(k2), s.count(k3))
	}
}

// Two raw messages without a message id and with equal bodies are
// different messages: the handler failures of one never count against the
// other's attempt budget, nor mark it dead-lettered.
func TestRouteStateDistinctIDlessMessagesShareNoFailures(t *testing.T) {
	s := newRouteState(0)
	first := delivery("", "same body")
	second := delivery("", "same body")
	for range 3 {
		s.fail(messageKey(first))
	}
	s.setDeadLettered(messageKey(first), "2026-01-01T00:00:00Z")
	if n := s.failures(messageKey(second)); n != 0 {
		t.Fatalf("an id-less message with an equal body inherits %d failed attempts", n)
	}
	if s.isDeadLettered(messageKey(second), "") {
		t.Fatal("an id-less message with an equal body counts as dead-lettered")
	}
	// Messages with ids keep their memory across redeliveries.
	withID := delivery("m-1", "same body")
	s.fail(messageKey(withID))
	redelivered := delivery("m-1", "same body")
	redelivered.Redelivered = true
	if n := s.failures(messageKey(redelivered)); n != 1 {
		t.Fatalf("a redelivered message with an id lost its failures: %d, want 1", n)
	}
	if n := s.failures(messageKey(delivery("m-2", "same body"))); n != 0 {
		t.Fatalf("another id inherits %d failures", n)
	}
}

// The dead-lettered mark matches only the original's redelivery: never the
// copy replayed (it carries the mark's stamp), and not after the message
// arrived anew, was forgotten or was evicted.
func TestRouteStateDeadLetterMarkIsScopedToTheOriginal(t *testing.T) {
	s := newRouteState(2)
	k := messageKey(delivery("m-1", "body"))
	const stamp = "2026-01-01T00:00:00.000000001Z"
	s.setDeadLettered(k, stamp)
	if !s.isDeadLettered(k, "") || !s.isDeadLettered(k, "2025-12-31T00:00:00Z") {
		t.Fatal("the original (no stamp, or an older copy's) is not recognised as dead-lettered")
	}
	if s.isDeadLettered(k, stamp) {
		t.Fatal("the dead-letter copy itself, replayed, counts as dead-lettered")
	}
	s.clearDeadLettered(k)
	if s.isDeadLettered(k, "") || s.hasDeadLettered() {
		t.Fatal("the mark survives a new delivery of the message")
	}
	s.setDeadLettered(k, stamp)
	s.forget(k)
	if s.hasDeadLettered() {
		t.Fatal("a forgotten record still counts as marked")
	}
	s.setDeadLettered(k, stamp)
	s.mark(messageKey(delivery("m-2", "body")))
	s.mark(messageKey(delivery("m-3", "body"))) // evicts m-1
	if s.isDeadLettered(k, "") || s.hasDeadLettered() {
		t.Fatal("an evicted record still counts as marked")
	}
}

func delivery(id, body string) *broker.Delivery {
	return &broker.Delivery{Delivery: amqp.Delivery{MessageId: id, Body: []byte(body), Exchange: "amq.topic", RoutingKey: "k"}}
}

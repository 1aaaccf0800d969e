package actors

import (
	"hash/fnv"

	"github.com/hato-go/hato/broker"
)

// msgKey identifies a message in a route's memory (RouteState).
//
// A message with a message id is keyed by exchange, routing key, id and
// body: every redelivery of it finds its record (crashes, requeues, failed
// attempts, dead-lettered).
//
// A message without a message id (a raw publish by another client) has
// nothing that tells two copies with equal bodies apart (a quorum queue's
// x-delivery-count is no help: it counts returns the message did not cause
// too). Such a message is keyed by content (exchange, routing key, body),
// and only for what content explains: crashes and requeues, so a body that
// crashes its handler is dead-lettered after MaxRedeliveries instead of
// looping forever, whichever copy carries it. Its failed handler attempts and its
// dead-lettered mark are never remembered: each delivery of an id-less
// message gets the whole in-process attempt budget, and a failure or the
// dead-lettering of one copy never counts against another. Give messages
// ids (hato's Publish always does) for exact per-message accounting.
type msgKey struct {
	hash      uint64
	byContent bool // no message id: crash and requeue counts only
}

// messageKey identifies a message across redeliveries for poison detection.
func messageKey(d *broker.Delivery) msgKey {
	h := fnv.New64a()
	_, _ = h.Write([]byte(d.Exchange))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(d.RoutingKey))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(d.MessageId))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(d.Body)
	return msgKey{hash: h.Sum64(), byContent: d.MessageId == ""}
}

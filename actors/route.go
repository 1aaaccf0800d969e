package actors

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
	"go.uber.org/zap"
)

// Route is everything a consumer actor needs to run one subscription. It is
// built once by the hato package and shared, read-only, by every incarnation
// of the route's consumer actor.
type Route struct {
	// Name identifies the route in logs, events and its actor's name.
	Name string
	// Topology is declared on every (re)connection.
	Topology broker.Topology
	// Prefetch and GlobalPrefetch are the QoS of the route's channel.
	Prefetch, GlobalPrefetch int
	// Concurrency is how many handlers run at once, across the actor's
	// incarnations; a job waiting for its retry keeps its slot. 1 keeps
	// order. See handlerSlots.
	Concurrency int
	// Handle processes one delivery: decoding, middleware, the user's
	// handler. It runs on its own goroutine. Its error decides the
	// delivery's fate through Directive / ActionOf: nil acks.
	Handle func(ctx context.Context, d *broker.Delivery) error
	// Failure is the route's failure policy.
	Failure FailurePolicy
	// Logger is the route's logger.
	Logger *zap.Logger
	// Service is the service name, written into dead-letter headers.
	Service string
	// Reopen paces channel reopening after a channel or connection loss.
	Reopen supervisor.Backoff
	// Events, when set, receives one event per message dead-lettered
	// (once the dead-letter queue confirmed it) or dropped, from the
	// consumer actor's or the publisher's goroutine. It must be safe for
	// concurrent use and must not block.
	Events func(DeliveryEvent)
}

// FailurePolicy says what happens to a delivery whose handler fails.
type FailurePolicy struct {
	// MaxAttempts is how many times a failing handler runs in process for one
	// delivery before the delivery is dead-lettered. Zero means 3.
	MaxAttempts int
	// Backoff paces those in-process retries.
	Backoff supervisor.Backoff
	// MaxRedeliveries bounds how often one message may come back from the
	// broker because its handler asked to requeue it or crashed the actor;
	// beyond it the message is dead-lettered. Zero means 5.
	MaxRedeliveries int
	// DeadLetterQueue is where failed messages are republished. Empty means
	// no dead-letter queue: failed messages are rejected without requeue
	// (the broker drops them, or routes them to a dead-letter exchange a
	// broker policy configured).
	DeadLetterQueue string
}

// WithDefaults fills zero fields.
func (p FailurePolicy) WithDefaults() FailurePolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 3
	}
	if p.MaxRedeliveries <= 0 {
		p.MaxRedeliveries = 5
	}
	if p.Backoff == (supervisor.Backoff{}) {
		p.Backoff = supervisor.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second, Multiplier: 2, Jitter: 0.2}
	}
	return p
}

// Action is what happens to a delivery after its handler ran.
type Action int

const (
	// Ack: done, remove the message.
	Ack Action = iota
	// Retry: run the handler again in process after a backoff, up to
	// FailurePolicy.MaxAttempts, then dead-letter. The default for errors.
	Retry
	// Requeue: return the message to the queue now (tomodachi's
	// internal-service-error), bounded by FailurePolicy.MaxRedeliveries.
	Requeue
	// DeadLetter: dead-letter now (undecodable or hopeless messages).
	DeadLetter
	// Drop: remove the message on purpose (acked and logged).
	Drop
)

func (a Action) String() string {
	switch a {
	case Ack:
		return "ack"
	case Retry:
		return "retry"
	case Requeue:
		return "requeue"
	case DeadLetter:
		return "dead-letter"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Directive is an error that says what to do with the delivery. Handlers
// return one (via the hato package's Requeue, Retry, DeadLetter, Drop) to
// override the default, which is Retry.
type Directive struct {
	Action Action
	Err    error
}

func (d *Directive) Error() string {
	if d.Err == nil {
		return d.Action.String()
	}
	return d.Err.Error()
}

// Unwrap returns the cause.
func (d *Directive) Unwrap() error { return d.Err }

// ActionOf maps a handler's error to an action: nil → Ack, a *Directive →
// its action, anything else → Retry.
func ActionOf(err error) Action {
	if err == nil {
		return Ack
	}
	var d *Directive
	if errors.As(err, &d) {
		return d.Action
	}
	return Retry
}

// DeliveryEvent reports what happened to a delivery that did not simply
// succeed.
type DeliveryEvent struct {
	Route       string
	Action      Action
	MessageID   string
	RoutingKey  string
	Attempts    int
	Err         error
	DeadLetterQ string
}

// RouteState is the memory of a route that outlives its actor's restarts
// and its channel's reconnections: for each message (see msgKey), how often
// it crashed a handler or was requeued, and how many handler attempts
// failed. A message redelivered by the broker (after a crash, a requeue or a
// connection loss) so continues from where it was: its poison limit and its
// attempt budget are never reset by a redelivery. It is bounded by its live
// records: when it is full, the record touched least recently is forgotten.
type RouteState struct {
	mu    sync.Mutex
	marks map[msgKey]*list.Element // of *marks, in order: least recently touched first
	order *list.List
	limit int
	lost  int // channels lost (connection or node loss), see lostChannel
}

// lostChannel records that the route lost a channel it did not close: the
// broker returned whatever it held, and a quorum queue counted each of
// those returns in x-delivery-count.
func (s *RouteState) lostChannel() {
	s.mu.Lock()
	s.lost++
	s.mu.Unlock()
}

// lostChannels is how many channels the route lost (see lostChannel):
// returns a message's x-delivery-count may hold that were no fault of it.
func (s *RouteState) lostChannels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

type marks struct {
	key          msgKey
	redeliveries int  // crashes and requeues
	failures     int  // failed handler attempts
	deadLettered bool // republished to the dead-letter queue and confirmed
}

// NewRouteState returns an empty state remembering up to limit messages
// (zero means 10,000).
func NewRouteState(limit int) *RouteState {
	if limit <= 0 {
		limit = 10000
	}
	return &RouteState{marks: map[msgKey]*list.Element{}, order: list.New(), limit: limit}
}

// entry returns the message's record, creating it, and makes it the most
// recently touched; s.mu must be held.
func (s *RouteState) entry(key msgKey) *marks {
	if e, ok := s.marks[key]; ok {
		s.order.MoveToBack(e)
		return e.Value.(*marks)
	}
	for len(s.marks) >= s.limit {
		oldest := s.order.Front()
		s.order.Remove(oldest)
		delete(s.marks, oldest.Value.(*marks).key)
	}
	m := &marks{key: key}
	s.marks[key] = s.order.PushBack(m)
	return m
}

// lookup returns the message's record or nil; s.mu must be held.
func (s *RouteState) lookup(key msgKey) *marks {
	if e, ok := s.marks[key]; ok {
		return e.Value.(*marks)
	}
	return nil
}

// mark records one more crash or requeue of the message and returns the
// new count.
func (s *RouteState) mark(key msgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entry(key)
	m.redeliveries++
	return m.redeliveries
}

// count returns how often the message crashed or was requeued.
func (s *RouteState) count(key msgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.lookup(key); m != nil {
		return m.redeliveries
	}
	return 0
}

// fail records one more failed handler attempt. Not for a message without
// id: see msgKey.
func (s *RouteState) fail(key msgKey) {
	if key.byContent {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(key).failures++
}

// failures returns how many handler attempts failed for the message.
func (s *RouteState) failures(key msgKey) int {
	if key.byContent {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.lookup(key); m != nil {
		return m.failures
	}
	return 0
}

// setDeadLettered remembers that the message is safely in the dead-letter
// queue, so a redelivery (its ack was lost with its channel) is acked
// instead of dead-lettered twice. Not for a message without id: see msgKey.
func (s *RouteState) setDeadLettered(key msgKey) {
	if key.byContent {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(key).deadLettered = true
}

// isDeadLettered reports whether the message was dead-lettered already.
func (s *RouteState) isDeadLettered(key msgKey) bool {
	if key.byContent {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookup(key)
	return m != nil && m.deadLettered
}

// forget drops the message's record once it is settled for good.
func (s *RouteState) forget(key msgKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.marks[key]; ok {
		s.order.Remove(e)
		delete(s.marks, key)
	}
}

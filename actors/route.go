package actors

import (
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
// and its channel's reconnections: for each message (by body hash), how
// often it crashed a handler or was requeued, and how many handler attempts
// failed. A message redelivered by the broker (after a crash, a requeue or a
// connection loss) so continues from where it was: its poison limit and its
// attempt budget are never reset by a redelivery. It is bounded: the oldest
// entries are forgotten first.
type RouteState struct {
	mu    sync.Mutex
	marks map[uint64]*marks
	order []uint64
	limit int
}

type marks struct {
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
	return &RouteState{marks: map[uint64]*marks{}, limit: limit}
}

// entry returns the message's record, creating it; s.mu must be held.
func (s *RouteState) entry(key uint64) *marks {
	m, ok := s.marks[key]
	if !ok {
		if len(s.order) >= s.limit {
			delete(s.marks, s.order[0])
			s.order = s.order[1:]
		}
		s.order = append(s.order, key)
		m = &marks{}
		s.marks[key] = m
	}
	return m
}

// mark records one more crash or requeue of the message and returns the
// new count.
func (s *RouteState) mark(key uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entry(key)
	m.redeliveries++
	return m.redeliveries
}

// count returns how often the message crashed or was requeued.
func (s *RouteState) count(key uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.marks[key]; ok {
		return m.redeliveries
	}
	return 0
}

// fail records one more failed handler attempt.
func (s *RouteState) fail(key uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(key).failures++
}

// failures returns how many handler attempts failed for the message.
func (s *RouteState) failures(key uint64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.marks[key]; ok {
		return m.failures
	}
	return 0
}

// setDeadLettered remembers that the message is safely in the dead-letter
// queue, so a redelivery (its ack was lost with its channel) is acked
// instead of dead-lettered twice.
func (s *RouteState) setDeadLettered(key uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entry(key)
	m.deadLettered = true
}

// isDeadLettered reports whether the message was dead-lettered already.
func (s *RouteState) isDeadLettered(key uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.marks[key]
	return ok && m.deadLettered
}

// forget drops the message's record once it is settled for good.
func (s *RouteState) forget(key uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.marks, key)
	// order keeps the stale key until it ages out; harmless.
}

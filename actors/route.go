package actors

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	// incarnations; a job keeps its slot while its handler's publishes
	// await their confirms and while it waits for its retry. 1 keeps order.
	// See handlerSlots and consumer.pump.
	Concurrency int
	// WorkerIdle is how long the route's handler goroutines stay once no
	// handler runs (they go after one to two such periods; the next
	// delivery starts them again). Zero means DefaultWorkerIdle.
	WorkerIdle time.Duration
	// HandlerTimeout is the deadline of one handler run: its context is
	// cancelled then, and an error it returns after that is a
	// *HandlerTimeoutError, a failed attempt. Zero means no deadline.
	HandlerTimeout time.Duration
	// StrictOrder keeps a delivery's handler slot until the publishes its
	// handler made are confirmed, not only until the handler returns, so
	// with Concurrency 1 a delivery whose publish fails runs again before
	// any later one. It costs a confirm round trip per delivery.
	StrictOrder bool
	// Handle processes one delivery: decoding, middleware, the user's
	// handler. It runs on its own goroutine. Its error decides the
	// delivery's fate through Directive / ActionOf: nil acks.
	Handle func(ctx context.Context, d *broker.Delivery) error
	// Failure is the route's failure policy.
	Failure FailurePolicy
	// Logger is the service's logger and LogFields what scopes it to the
	// route (its name, routing key): the actor adds them lazily
	// (zap.Logger.WithLazy), so an idle route holds no encoded copy of them,
	// and writes them itself into its "consuming" line.
	Logger    *zap.Logger
	LogFields []zap.Field
	// Service is the service name, written into dead-letter headers.
	Service string
	// Reopen paces channel reopening after a channel or connection loss.
	Reopen supervisor.Backoff
	// Events, when set, receives one event per message dead-lettered
	// (once the dead-letter queue confirmed it) or dropped, and a Requeue
	// event when a message could not be dead-lettered because its
	// dead-letter queue refused the copy even after being declared again
	// (the message went back to its queue), from the consumer actor's or
	// the publisher's goroutine. It must be safe for concurrent use and
	// must not block.
	Events func(DeliveryEvent)
	// Breaker, when set, pauses the route while its handler keeps failing
	// (see BreakerPolicy and breaker.go); without it only a handler's
	// PauseDirective pauses the route. BreakerEvents, when set, receives
	// every change of the breaker's state, from the consumer actor's
	// goroutine: it must not block.
	Breaker       *BreakerPolicy
	BreakerEvents func(BreakerEvent)
}

// FailurePolicy says what happens to a message whose handler fails.
// Package hato exports it as hato.FailurePolicy (see hato.FailureHandling):
// zero fields take the defaults (WithDefaults).
type FailurePolicy struct {
	// MaxAttempts is how many times a failing handler runs in process for
	// one delivery before the message is dead-lettered. Zero means 3 (1
	// with RetryDelays).
	MaxAttempts int
	// Backoff paces those in-process retries. Zero means 100 ms doubling to
	// 5 s with 20 % jitter.
	Backoff supervisor.Backoff
	// MaxRedeliveries bounds how often one message may come back from the
	// broker because its handler asked to requeue it or crashed the route's
	// actor; beyond it the message is dead-lettered as poison. Zero means 5.
	// Only what the message itself did counts (the route's RouteState
	// counts it): returns it did not cause (another message's crash, a lost
	// channel, a drain, a restart) do not. A quorum queue's
	// x-delivery-count, which counts those too before RabbitMQ 4.3, is only
	// a backstop at 100 deliveries (or 20 × MaxRedeliveries if more), for a
	// message that crashes the whole process: see DeliveryCountLimit.
	MaxRedeliveries int
	// DeadLetterQueue is where failed messages are republished. Given to
	// hato, empty means "<queue>.dlq" (or none with hato.NoDeadLetterQueue:
	// failed messages are then rejected without requeue). On a Route,
	// where hato has resolved it, empty means none: failed messages are
	// rejected without requeue (the broker drops them, or routes them to a
	// dead-letter exchange a broker policy configured).
	DeadLetterQueue string
	// RetryDelays, when set, retries a failed message through the broker
	// instead of in process: it waits RetryDelays[i] in a delay queue of
	// hato's ("<queue>.retry.<delay>", broker.RetryQueueName) and comes
	// back to the route's queue (hato.Message.Retry and the HeaderRetry
	// header count the delayed retries); after the last delay it is
	// dead-lettered, its headers holding the retry history. A waiting
	// message holds no handler slot and no unacked delivery, and survives
	// restarts. MaxAttempts zero then means 1; a MaxAttempts set runs that
	// many in-process attempts before each delay. Order is not kept across
	// a delayed retry. See retrydelay.go and docs/outage-handling.md.
	RetryDelays []time.Duration
}

// WithDefaults fills zero fields.
func (p FailurePolicy) WithDefaults() FailurePolicy {
	if p.MaxAttempts <= 0 && len(p.RetryDelays) > 0 {
		p.MaxAttempts = 1 // the delayed retries replace the in-process ones
	}
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

// DeliveryCountLimit is the backstop on a quorum queue's x-delivery-count:
// a redelivered message the broker delivered more often than this is
// dead-lettered as poison even if the route's memory knows nothing of it
// (it crashed the whole process, or another instance, each time). It is
// high, 100 or 20 × MaxRedeliveries if more, because the count also rises
// when a healthy message is returned for others' crashes or a restart.
func (p FailurePolicy) DeliveryCountLimit() int {
	return max(100, 20*p.MaxRedeliveries)
}

// Action is what happens to a delivery after its handler ran, and what
// became of the message a DeliveryEvent reports. Package hato exports it
// as hato.Action, with the values a DeliveryEvent carries:
// hato.ActionDeadLetter, hato.ActionDrop, hato.ActionRequeue,
// hato.ActionDuplicate. The values are fixed (hato's constants have had
// them since they were its own): do not reorder.
type Action int

const (
	// Ack: done, remove the message.
	Ack Action = 0
	// DeadLetter: dead-letter now (undecodable or hopeless messages). As a
	// DeliveryEvent's: the message failed for good. It was republished to
	// its dead-letter queue (the broker confirmed it) and acked, or, with
	// no dead-letter queue, rejected without requeue.
	DeadLetter Action = 1
	// Drop: remove the message on purpose (acked and logged). As a
	// DeliveryEvent's: the handler dropped the message (hato.Drop).
	Drop Action = 2
	// Requeue: return the message to the queue now (tomodachi's
	// internal-service-error), bounded by FailurePolicy.MaxRedeliveries.
	// As a DeliveryEvent's: the message failed for good but could not be
	// dead-lettered: its dead-letter queue refused the copy as unroutable
	// even after hato declared the queue again. It went back to its queue
	// (and is dead-lettered again when it fails again); Err says why.
	Requeue Action = 3
	// Duplicate: only a DeliveryEvent's (never a Directive's): the
	// message's uuid was handled within the route's Dedupe window; it was
	// acked without running the handler.
	Duplicate Action = 4
	// Retry: run the handler again in process after a backoff, up to
	// FailurePolicy.MaxAttempts, then dead-letter. The default for errors.
	Retry Action = 5
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
	case Duplicate:
		return "duplicate"
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

// actionOf maps a handler's error to an action: nil → Ack, a *Directive →
// its action, anything else → Retry.
func actionOf(err error) Action {
	if err == nil {
		return Ack
	}
	var d *Directive
	if errors.As(err, &d) {
		return d.Action
	}
	return Retry
}

// DeliveryEvent reports a message that was dead-lettered or dropped, or
// could not be dead-lettered (Requeue), or was acked as a duplicate
// (Duplicate; hato.Dedupe). Package hato exports it as hato.DeliveryEvent
// (see hato.WithDeliveryEvents).
type DeliveryEvent struct {
	// Route is the route's name.
	Route string
	// Action is what became of the message.
	Action Action
	// MessageID is the AMQP message id.
	MessageID string
	// RoutingKey is the key the message was delivered with.
	RoutingKey string
	// Attempts is how many times the handler ran for this delivery.
	Attempts int
	// Err is why.
	Err error
	// DeadLetterQueue is the queue the message went to (DeadLetter; empty
	// when there is none), or the one that refused it (Requeue).
	DeadLetterQueue string
}

// routeState is the memory of a route that outlives its actor's restarts
// and its channel's reconnections: for each message (see msgKey), how often
// it crashed a handler (it was the delivery in the handler that panicked)
// or was requeued by its handler, how many handler attempts failed, and
// whether its dead-letter copy was confirmed (see setDeadLettered). Poison
// is judged by these, what the message itself did; returns it did not
// cause (another message's crash, a channel loss, a drain) count nowhere.
// A message redelivered by the broker (after a crash, a requeue or a
// connection loss) so continues from where it was: its poison limit and its
// attempt budget are never reset by a redelivery. It is bounded by its live
// records: when it is full, the record touched least recently is forgotten.
type routeState struct {
	mu    sync.Mutex
	marks map[msgKey]*list.Element // of *marks, in order: least recently touched first
	order *list.List
	limit int
	// deadMarks counts records marked dead-lettered, so a delivery that is
	// not redelivered is hashed (to clear its mark) only while there are any.
	deadMarks atomic.Int64
	// deadUntil is when the last dead-lettered mark expires (unix nanos):
	// past it every mark is expired (see hasDeadLettered).
	deadUntil atomic.Int64
	deadTTL   time.Duration // deadLetterMarkTTL; shorter in tests
	lost      int           // channels lost (connection or node loss), see lostChannel
	// drained: a drain of the route completed (or its incarnation crashed
	// while draining). Every later incarnation stays idle.
	drained atomic.Bool
}

// deadLetterMarkTTL bounds how long a dead-lettered mark lives (see
// setDeadLettered). The redelivery it is for comes as soon as a channel
// consumes the queue again: within the reopen backoff, or once the broker
// is back.
const deadLetterMarkTTL = 5 * time.Minute

// lostChannel records that the route lost a channel it did not close: the
// broker returned whatever it held, and a quorum queue counted each of
// those returns in x-delivery-count.
func (s *routeState) lostChannel() {
	s.mu.Lock()
	s.lost++
	s.mu.Unlock()
}

// lostChannels is how many channels the route lost (see lostChannel):
// returns a message's x-delivery-count may hold that were no fault of it.
func (s *routeState) lostChannels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

type marks struct {
	key          msgKey
	redeliveries int    // crashes and requeues
	failures     int    // failed handler attempts
	deadLettered string // stamp of the confirmed dead-letter copy; "" when none
	deadUntil    int64  // when that mark expires (unix nanos)
}

// newRouteState returns an empty state remembering up to limit messages
// (zero means 10,000).
func newRouteState(limit int) *routeState {
	if limit <= 0 {
		limit = 10000
	}
	return &routeState{marks: map[msgKey]*list.Element{}, order: list.New(), limit: limit, deadTTL: deadLetterMarkTTL}
}

// entry returns the message's record, creating it, and makes it the most
// recently touched; s.mu must be held.
func (s *routeState) entry(key msgKey) *marks {
	if e, ok := s.marks[key]; ok {
		s.order.MoveToBack(e)
		return e.Value.(*marks)
	}
	for len(s.marks) >= s.limit {
		s.drop(s.order.Front())
	}
	m := &marks{key: key}
	s.marks[key] = s.order.PushBack(m)
	return m
}

// lookup returns the message's record or nil; s.mu must be held.
func (s *routeState) lookup(key msgKey) *marks {
	if e, ok := s.marks[key]; ok {
		return e.Value.(*marks)
	}
	return nil
}

// mark records one more crash or requeue of the message and returns the
// new count.
func (s *routeState) mark(key msgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entry(key)
	m.redeliveries++
	return m.redeliveries
}

// count returns how often the message crashed or was requeued.
func (s *routeState) count(key msgKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.lookup(key); m != nil {
		return m.redeliveries
	}
	return 0
}

// fail records one more failed handler attempt. Not for a message without
// id: see msgKey.
func (s *routeState) fail(key msgKey) {
	if key.byContent {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entry(key).failures++
}

// failures returns how many handler attempts failed for the message.
func (s *routeState) failures(key msgKey) int {
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
// queue as the copy stamped stamp (its HeaderDeadLetteredAt), so the
// original's redelivery (its ack was lost with its channel) is acked
// instead of dead-lettered twice. Not for a message without id: see msgKey.
//
// The mark suppresses that one redelivery and nothing else: it is dropped
// when the redelivery is settled (see consumer.dead), when the message
// arrives again not redelivered (a new publish or a replay from the
// dead-letter queue: see clearDeadLettered), and it never matches the copy
// itself (which carries stamp). It expires after deadTTL: then the
// record goes (see hasDeadLettered), so a route that dead-lettered a message
// once does not hash every later delivery, nor keep the record, for its
// lifetime.
func (s *routeState) setDeadLettered(key msgKey, stamp string) {
	if key.byContent {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.entry(key)
	if m.deadLettered == "" {
		s.deadMarks.Add(1)
	}
	m.deadLettered = stamp
	m.deadUntil = time.Now().Add(s.deadTTL).UnixNano()
	s.deadUntil.Store(m.deadUntil)
}

// isDeadLettered reports whether a redelivery of the message carrying
// stamp (its HeaderDeadLetteredAt, empty if none) is the original of a
// confirmed dead-letter copy, rather than that copy replayed.
func (s *routeState) isDeadLettered(key msgKey, stamp string) bool {
	if key.byContent || s.deadMarks.Load() == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.lookup(key)
	return m != nil && m.deadLettered != "" && m.deadLettered != stamp && time.Now().UnixNano() < m.deadUntil
}

// hasDeadLettered reports whether any message is marked dead-lettered and
// the mark has not expired; a cheap check before hashing a delivery that is
// not redelivered. Once every mark expired it drops their records.
func (s *routeState) hasDeadLettered() bool {
	if s.deadMarks.Load() == 0 {
		return false
	}
	if time.Now().UnixNano() < s.deadUntil.Load() {
		return true
	}
	s.sweepDead()
	return false
}

// sweepDead drops the records of expired dead-lettered marks: the message
// was dead-lettered, so nothing else in the record is needed any more.
func (s *routeState) sweepDead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	for e := s.order.Front(); e != nil && s.deadMarks.Load() > 0; {
		next := e.Next()
		if m := e.Value.(*marks); m.deadLettered != "" && m.deadUntil <= now {
			s.drop(e)
		}
		e = next
	}
}

// clearDeadLettered drops the message's dead-lettered mark: it arrived
// again as a new delivery, so the one redelivery the mark was for is past.
func (s *routeState) clearDeadLettered(key msgKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.lookup(key); m != nil && m.deadLettered != "" {
		m.deadLettered = ""
		s.deadMarks.Add(-1)
	}
}

// forget drops the message's record once it is settled for good.
func (s *routeState) forget(key msgKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.marks[key]; ok {
		s.drop(e)
	}
}

// drop removes a record; s.mu must be held.
func (s *routeState) drop(e *list.Element) {
	m := e.Value.(*marks)
	if m.deadLettered != "" {
		s.deadMarks.Add(-1)
	}
	s.order.Remove(e)
	delete(s.marks, m.key)
}

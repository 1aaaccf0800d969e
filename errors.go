package hato

import (
	"errors"
	"fmt"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

// Errors. Publish errors also match the broker package's sentinels
// (ErrNacked, ErrUnroutable, ErrExchangeNotFound, ...) re-exported here.
var (
	// ErrInvalidOption: an option or registration is invalid.
	ErrInvalidOption = errors.New("hato: invalid option")
	// ErrNotStarted: the service has not been started.
	ErrNotStarted = errors.New("hato: service not started")
	// ErrAlreadyStarted: Start was called twice, or Subscribe after Start.
	ErrAlreadyStarted = errors.New("hato: service already started")
	// ErrStopped: the service is stopping or stopped.
	ErrStopped = errors.New("hato: service stopped")
	// ErrBufferFull: too many publishes are waiting for the broker.
	ErrBufferFull = actors.ErrBufferFull
	// ErrHandlerTimeout matches a *HandlerTimeoutError: a handler returned
	// an error after its deadline (see HandlerTimeout).
	ErrHandlerTimeout = actors.ErrHandlerTimeout
	// ErrConnectionClosed: the connection closed before a publish had an
	// outcome.
	ErrConnectionClosed = actors.ErrClosed
	// ErrNacked: the broker refused a publish (basic.nack) broker.MaxNacks
	// (5) times; after each earlier nack it was sent again on a new channel.
	ErrNacked = broker.ErrNacked
	// ErrUnroutable: a Mandatory publish matched no queue.
	ErrUnroutable = broker.ErrUnroutable
	// ErrExchangeNotFound: a publish named a missing exchange.
	ErrExchangeNotFound = broker.ErrExchangeNotFound
	// ErrPreconditionFailed: the broker refused a declaration that conflicts
	// with what exists (a queue with other arguments).
	ErrPreconditionFailed = broker.ErrPreconditionFailed
	// ErrAccessRefused: the broker refused credentials or access.
	ErrAccessRefused = broker.ErrAccessRefused
	// ErrTLS: the TLS handshake with the broker failed for a reason a retry
	// cannot mend (an untrusted certificate or one for another host, a
	// broker port that does not speak TLS). Start fails at once with it.
	ErrTLS = broker.ErrTLS
	// ErrDrainIncomplete: Stop's drain deadline passed with deliveries in
	// hand (they went back to the broker) or publishes unconfirmed.
	ErrDrainIncomplete = errors.New("hato: drain incomplete")
	// ErrInvalidArgument: a value AMQP cannot carry or the envelope cannot
	// encode. Publish and Subscribe return it at once, before anything is
	// sent; every error below up to ErrMessageTooLarge matches it too.
	ErrInvalidArgument = broker.ErrInvalidArgument
	// ErrInvalidRoutingKey: a routing key or binding pattern over 255 bytes
	// as sent (routing-key prefix and tomodachi's encoding included: a
	// non-ASCII character takes up to 12 bytes) or not UTF-8.
	ErrInvalidRoutingKey = broker.ErrInvalidRoutingKey
	// ErrInvalidName: an exchange or queue name (dead-letter queue
	// included) over 255 bytes or not UTF-8.
	ErrInvalidName = broker.ErrInvalidName
	// ErrInvalidHeaders: headers with a value type AMQP cannot encode or a
	// field name over 255 bytes.
	ErrInvalidHeaders = broker.ErrInvalidHeaders
	// ErrPropertiesTooLarge: headers and properties that do not fit one
	// AMQP frame (the connection's frame_max, less a margin for what hato
	// adds); the broker would close the connection. Matches
	// ErrInvalidHeaders and ErrInvalidArgument too.
	ErrPropertiesTooLarge = broker.ErrPropertiesTooLarge
	// ErrInvalidProperty: a message property over 255 bytes (the message
	// id, made of the service uuid, or the app id, the service name).
	ErrInvalidProperty = broker.ErrInvalidProperty
	// ErrInvalidPayload: the envelope cannot encode the data (it also
	// matches the envelope's error, envelope.ErrPayloadType).
	ErrInvalidPayload error = &invalidArgument{"hato: invalid payload"}
	// ErrMessageTooLarge: the encoded body is larger than the service's
	// WithMaxMessageSize (default 128 MiB, RabbitMQ's default).
	ErrMessageTooLarge error = &invalidArgument{"hato: message too large"}
	// ErrRouteFailed: a route gave up (restart budget exhausted or its
	// topology refused); the service stops with it unless
	// WithKeepRunningOnRouteFailure.
	ErrRouteFailed = errors.New("hato: route failed")
)

// FailurePolicy says what happens to a message whose handler fails: for
// the service's routes or one route (see FailureHandling). Zero fields take
// the defaults.
//
// MaxAttempts is how many times a failing handler runs in process for one
// delivery before the message is dead-lettered (zero means 3), paced by
// Backoff (zero means 100 ms doubling to 5 s with 20 % jitter).
// MaxRedeliveries bounds how often one message may come back from the
// broker because its handler asked to requeue it or crashed the route's
// actor (zero means 5); beyond it the message is dead-lettered as poison.
// DeadLetterQueue is where failed messages are republished (empty means
// "<queue>.dlq", or none with NoDeadLetterQueue). RetryDelays, when set,
// retries a failed message through the broker, in delay queues, instead of
// in process (see docs/outage-handling.md). The fields' docs tell more.
type FailurePolicy = actors.FailurePolicy

// checkFailurePolicy refuses negative values, which the defaults would
// silently replace.
func checkFailurePolicy(p FailurePolicy) error {
	if p.MaxAttempts < 0 {
		return invalid("failure policy: MaxAttempts %d is negative (0 means the default)", p.MaxAttempts)
	}
	if p.MaxRedeliveries < 0 {
		return invalid("failure policy: MaxRedeliveries %d is negative (0 means the default)", p.MaxRedeliveries)
	}
	return checkBackoff(p.Backoff)
}

// Action is what became of the message a DeliveryEvent reports: one of the
// constants below.
type Action = actors.Action

// The actions a DeliveryEvent reports.
const (
	// ActionDeadLetter: the message failed for good. It was republished to
	// its dead-letter queue (the broker confirmed it) and acked, or, with
	// no dead-letter queue, rejected without requeue.
	ActionDeadLetter = actors.DeadLetter
	// ActionDrop: the handler dropped the message on purpose (Drop); it was
	// acked and logged.
	ActionDrop = actors.Drop
	// ActionRequeue: the message failed for good but could not be
	// dead-lettered: its dead-letter queue refused the copy as unroutable
	// even after hato declared the queue again. It went back to its queue
	// (and is dead-lettered again when it fails again); Err says why.
	ActionRequeue = actors.Requeue
	// ActionDuplicate: the message's uuid was handled within the route's
	// Dedupe window; it was acked without running the handler.
	ActionDuplicate = actors.Duplicate
)

// DeliveryEvent reports a message that was dead-lettered or dropped, or
// could not be dead-lettered (ActionRequeue), or was acked as a duplicate
// (ActionDuplicate; see Dedupe and WithDeliveryEvents): its Route (name),
// Action, MessageID (the AMQP message id), RoutingKey (as delivered),
// Attempts (how many times the handler ran for this delivery), Err (why)
// and DeadLetterQueue (the queue the message went to, empty when there is
// none, or the one that refused it).
type DeliveryEvent = actors.DeliveryEvent

// Requeue returns err marked "requeue": the message goes back to the queue
// at once (tomodachi's internal-service-error), up to the route's
// MaxRedeliveries, then it is dead-lettered.
func Requeue(err error) error { return &actors.Directive{Action: actors.Requeue, Err: err} }

// Retry returns err marked "retry": the handler runs again in process after
// a backoff, up to the route's MaxAttempts, then the message is
// dead-lettered. This is what any unmarked error does.
func Retry(err error) error { return &actors.Directive{Action: actors.Retry, Err: err} }

// DeadLetter returns err marked "dead-letter": the message goes to the
// dead-letter queue now.
func DeadLetter(err error) error { return &actors.Directive{Action: actors.DeadLetter, Err: err} }

// Drop returns err marked "drop": the message is acked and logged, on
// purpose.
func Drop(err error) error { return &actors.Directive{Action: actors.Drop, Err: err} }

// DecodeError is why a delivery could not be decoded by its route's
// envelope. The message is dead-lettered at once, never requeued. It wraps
// the envelope error, so errors.Is matches the envelope package's sentinels.
type DecodeError struct {
	Envelope   string
	MessageID  string
	RoutingKey string
	Err        error
}

func (e *DecodeError) Error() string {
	id := e.MessageID
	if id == "" {
		id = "(no message id)"
	}
	what := "undecodable"
	if errors.Is(e.Err, envelope.ErrValidation) {
		what = "invalid" // decoded, then refused by the route's validator
	}
	return fmt.Sprintf("hato: %s message %s on %q: %v", what, id, e.RoutingKey, e.Err)
}

// Unwrap returns the envelope error.
func (e *DecodeError) Unwrap() error { return e.Err }

// MessageError is a handler's error with the uuid of the message it failed
// on, for logs.
type MessageError struct {
	UUID string
	Err  error
}

func (e *MessageError) Error() string { return fmt.Sprintf("message %s: %v", e.UUID, e.Err) }

// Unwrap returns the handler's error.
func (e *MessageError) Unwrap() error { return e.Err }

// MessageUUID returns the message uuid.
func (e *MessageError) MessageUUID() string { return e.UUID }

func messageError(uuid string, err error) error {
	if err == nil || uuid == "" {
		return err
	}
	return &MessageError{UUID: uuid, Err: err}
}

func redactURL(u string) string { return broker.Redact(u) }

// HandlerTimeoutError is a handler's error returned after its deadline
// passed (see HandlerTimeout): a failed attempt. It matches
// ErrHandlerTimeout, and context.DeadlineExceeded when the handler returned
// its context's error.
type HandlerTimeoutError = actors.HandlerTimeoutError

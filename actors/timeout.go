package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// ErrHandlerTimeout matches a *HandlerTimeoutError with errors.Is.
var ErrHandlerTimeout = errors.New("hato: handler deadline exceeded")

// HandlerTimeoutError is the outcome of a handler run that returned an
// error after its deadline (Route.HandlerTimeout) passed: a failed attempt,
// retried like any other (FailurePolicy.MaxAttempts), then dead-lettered.
// Err is what the handler returned (usually its context's error). It
// matches ErrHandlerTimeout, and context.DeadlineExceeded when Err does.
type HandlerTimeoutError struct {
	Timeout time.Duration
	Err     error
}

func (e *HandlerTimeoutError) Error() string {
	return fmt.Sprintf("handler ran past its deadline of %s: %v", e.Timeout, e.Err)
}

// Unwrap returns what the handler returned.
func (e *HandlerTimeoutError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrHandlerTimeout) true.
func (e *HandlerTimeoutError) Is(target error) bool { return target == ErrHandlerTimeout }

// handleWithin runs handle for r with a context cancelled after timeout
// (none when timeout is zero). An error returned once the deadline passed,
// unless it is a Directive (the handler chose the outcome), becomes a
// *HandlerTimeoutError. A handler that returns nil after its deadline
// succeeded: its delivery is acked as usual.
func handleWithin(r *run, handle func(context.Context, *broker.Delivery) error, timeout time.Duration) error {
	if timeout <= 0 {
		return handle(r, r.d)
	}
	ctx, cancel := context.WithTimeout(r, timeout)
	defer cancel()
	err := handle(ctx, r.d)
	if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	var d *Directive
	if errors.As(err, &d) {
		return err
	}
	return &HandlerTimeoutError{Timeout: timeout, Err: err}
}

// blameRunning counts the channel's end against the messages whose
// handlers ran when the broker closed it with 406 PRECONDITION_FAILED: on
// an open consuming session that is RabbitMQ's consumer_timeout (a delivery
// stayed unacked too long), and the deliveries in running handlers are the
// ones that held theirs. Their redeliveries then count towards
// MaxRedeliveries, so a message whose handler always outlives
// consumer_timeout ends in the dead-letter queue instead of looping.
// Queued deliveries, also past the timeout because they waited behind it,
// are not to blame. Any other end (connection loss, a drain) blames no one.
func (c *consumer) blameRunning(err error) {
	if !errors.Is(err, broker.ErrPreconditionFailed) {
		return
	}
	for _, j := range c.jobs {
		if j.stage != running {
			continue
		}
		n := c.state.mark(j.keyOf())
		c.log.Warn("channel closed by the broker while the handler ran (consumer_timeout?); counted as a redelivery of the message",
			append(c.fields(j, err), zap.Int("redeliveries", n))...)
	}
}

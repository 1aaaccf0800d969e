package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// Headers of delayed retries (see FailurePolicy.RetryDelays).
const (
	// HeaderRetry counts the delayed retries a message has been through:
	// set on the copy sent to a delay queue, 1 for the first.
	HeaderRetry = "x-hato-retry"
	// HeaderRetryHistory lists them, oldest first: "retry N after D at T: reason".
	HeaderRetryHistory = "x-hato-retry-history"
)

// RetryOf is how many delayed retries the delivery has been through (its
// HeaderRetry), 0 on the first delivery.
func RetryOf(h amqp.Table) int {
	n, _ := deliveryCount(amqp.Table{"x-delivery-count": h[HeaderRetry]})
	return int(max(n, 0))
}

// outageMsg is an async result of the breaker or of delayed retries: it
// handles itself (one hook in receiveResult for all of them).
type outageMsg interface {
	stamped
	handle(c *consumer, ctx actor.Context)
}

func (m *breakerTrial) handle(c *consumer, ctx actor.Context) { c.breakerTrial(ctx, m) }

type (
	// retryDelayed reports the publish of job id's copy to a delay queue.
	retryDelayed struct {
		inc, id uint64
		err     error
	}
	// retryQueuesDeclared reports declaring the delay queues again, for
	// job id (0: the periodic declaration).
	retryQueuesDeclared struct {
		inc, id uint64
		err     error
	}
	// retryResend sends job id's copy again.
	retryResend struct{ inc, id uint64 }
	// retryRedeclare declares the delay queues again (see
	// broker.RetryQueueExpiry).
	retryRedeclare struct{ inc uint64 }
)

func (m *retryDelayed) incarnation() uint64        { return m.inc }
func (m *retryQueuesDeclared) incarnation() uint64 { return m.inc }
func (m *retryResend) incarnation() uint64         { return m.inc }
func (m *retryRedeclare) incarnation() uint64      { return m.inc }

func (m *retryDelayed) handle(c *consumer, ctx actor.Context) { c.retryDelayed(ctx, m) }
func (m *retryQueuesDeclared) handle(c *consumer, ctx actor.Context) {
	if j := c.jobs[m.id]; m.id != 0 && j != nil && j.stage == retryDelaying {
		c.after(c.policy.Backoff.Delay(j.redeclares), &retryResend{inc: c.inc, id: m.id})
	}
}
func (m *retryResend) handle(c *consumer, ctx actor.Context) {
	if j := c.jobs[m.id]; j != nil && j.stage == retryDelaying {
		c.publishRetry(ctx, j)
	}
}
func (m *retryRedeclare) handle(c *consumer, _ actor.Context) { c.redeclareRetryQueues() }

// delayRetry sends a job that failed its in-process attempts to the delay
// queue of its next delayed retry, if it has one left: the copy is
// published with confirms, and only then is the original acked (see
// retryDelayed). False: no delayed retry is left (or none is configured),
// the caller dead-letters it.
func (c *consumer) delayRetry(ctx actor.Context, j *job, err error) bool {
	r := RetryOf(j.d.Headers)
	if r >= len(c.policy.RetryDelays) {
		return false
	}
	j.err = err
	j.stage = retryDelaying
	j.redeclares = 0
	c.log.Warn("handler failed; retrying through the broker after a delay",
		append(c.fields(j, err), zap.Int("retry", r+1), zap.Duration("delay", c.policy.RetryDelays[r]))...)
	c.publishRetry(ctx, j)
	return true
}

func (c *consumer) publishRetry(ctx actor.Context, j *job) {
	inc, id, self, sys := c.inc, j.id, c.self, c.sys
	req := retryRequest(j.d, c.route, c.policy.RetryDelays, j.attempts, j.err)
	req.Done = func(err error) { sys.Root.Send(self, &retryDelayed{inc: inc, id: id, err: err}) }
	c.direct.Post(ctx.Send, c.conn, req)
}

// retryRequest is the copy of d for its next delayed retry: as a
// dead-letter copy (see deadLetterRequest: persistent, no expiration,
// where it came from), to the delay queue, with HeaderRetry one more and
// the retry appended to HeaderRetryHistory.
func retryRequest(d *broker.Delivery, route *Route, delays []time.Duration, attempts int, reason error) *broker.Request {
	r := RetryOf(d.Headers)
	delay := delays[r]
	req := deadLetterRequest(d, broker.RetryQueueName(route.Topology.Queue, delay), route, attempts, reason)
	h := req.Msg.Headers
	delete(h, HeaderDeadLetteredAt)
	h[HeaderRetry] = int64(r + 1)
	entry := fmt.Sprintf("retry %d after %s at %s", r+1, delay, time.Now().UTC().Format(time.RFC3339))
	if reason != nil {
		entry += ": " + truncate(reason.Error(), 256)
	}
	prev, _ := h[HeaderRetryHistory].([]any)
	h[HeaderRetryHistory] = append(append([]any(nil), prev...), entry)
	return req
}

// retryDelayed acks the original once its copy is in the delay queue. A
// copy the broker did not take is sent again (the delay queues declared
// again first if it was unroutable), up to maxRedeclares times; beyond
// that the original goes back to its queue rather than being held forever.
func (c *consumer) retryDelayed(ctx actor.Context, msg *retryDelayed) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != retryDelaying {
		return
	}
	if msg.err == nil {
		j.d.Ack()
		c.done(j)
		return
	}
	if j.redeclares >= maxRedeclares {
		c.log.Error("delay queue refuses the copy; returning the message to its queue", c.fields(j, msg.err)...)
		c.release(j)
		return
	}
	j.redeclares++
	if errors.Is(msg.err, broker.ErrUnroutable) {
		c.log.Warn("delay queue missing: declaring it again", c.fields(j, msg.err)...)
		c.declareRetryQueues(j.id)
		return
	}
	c.log.Error("sending to the delay queue failed; holding the message and retrying", c.fields(j, msg.err)...)
	c.after(c.policy.Backoff.Delay(j.redeclares), &retryResend{inc: c.inc, id: j.id})
}

// startRetryRedeclare schedules the periodic declaration of the delay
// queues, which keeps x-expires from deleting a queue in use (the session
// start declares them too).
func (c *consumer) startRetryRedeclare() {
	if len(c.policy.RetryDelays) == 0 {
		return
	}
	c.after(c.redeclarePeriod(), &retryRedeclare{inc: c.inc})
}

func (c *consumer) redeclarePeriod() time.Duration {
	p := broker.RetryQueueExpiry(c.policy.RetryDelays[0])
	for _, d := range c.policy.RetryDelays {
		p = min(p, broker.RetryQueueExpiry(d))
	}
	return p / 3
}

func (c *consumer) redeclareRetryQueues() {
	if c.drain != nil || c.drained {
		return
	}
	c.declareRetryQueues(0)
	c.after(c.redeclarePeriod(), &retryRedeclare{inc: c.inc})
}

// declareRetryQueues declares the route's delay queues on a channel of its
// own (as declareDeadLetterQueue does), then reports retryQueuesDeclared.
func (c *consumer) declareRetryQueues(id uint64) {
	topo := c.route.Topology
	topo.RetryDelays = c.policy.RetryDelays
	inc := c.inc
	c.onOwnChannel(id, topo.DeclareRetryQueues, func(err error) any {
		return &retryQueuesDeclared{inc: inc, id: id, err: err}
	})
}

// restoreRetried gives a message back from a delay queue the exchange and
// routing key it was published with: the broker dead-lettered it through
// the default exchange with the queue's name as routing key.
func restoreRetried(d *broker.Delivery) {
	if _, ok := d.Headers[HeaderRetry]; !ok || d.Exchange != "" {
		return
	}
	if ex, ok := d.Headers[HeaderOriginalExchange].(string); ok {
		d.Exchange = ex
	}
	if key, ok := d.Headers[HeaderOriginalKey].(string); ok {
		d.RoutingKey = key
	}
}

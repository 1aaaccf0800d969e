package actors

import (
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// publishesSettled finishes a job once every publish its handler made is
// confirmed (the delivery was acked by whoever settled the tracker), or
// retries it when one failed.
func (c *consumer) publishesSettled(ctx actor.Context, msg *publishesSettled) {
	j := c.jobs[msg.id]
	if j == nil || msg.inc != c.inc || j.attempts != msg.attempt {
		return
	}
	switch j.stage {
	case running:
		// Its handlerDone is still in the mailbox.
		j.early, j.earlyErr = true, msg.err
	case confirming:
		if c.route.StrictOrder {
			c.waiting--
		}
		c.published(ctx, j, msg.err)
		c.pump()
	}
}

// settledRuns handles the runs of the settledBox.
func (c *consumer) settledRuns(ctx actor.Context) {
	c.settled = c.box.take(c.settled)
	for i, r := range c.settled {
		c.publishesSettled(ctx, &r.settle)
		c.settled[i] = nil
	}
}

// published finishes a job whose handler succeeded, once its publishes
// settled: acked already if they were all confirmed (the ack goes from the
// goroutine that settled the tracker straight to the session, not through
// this mailbox), retried if one failed.
func (c *consumer) published(ctx actor.Context, j *job, err error) {
	if err != nil {
		c.settle(ctx, j, Retry, fmt.Errorf("publish from handler failed: %w", err))
		return
	}
	c.done(j)
}

// retryDue runs a job again once its retry backoff passed (at the front of
// the queue), or returns it to the broker while draining.
func (c *consumer) retryDue(msg *retryDue) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != retryWait {
		return
	}
	c.waiting--
	if c.drain != nil {
		c.release(j)
		return
	}
	j.stage = queued
	c.queue = append([]*job{j}, c.queue...)
	c.pump()
}

func (c *consumer) deadLetterRetry(ctx actor.Context, msg *deadLetterRetry) {
	if j := c.jobs[msg.id]; j != nil && j.stage == deadLettering {
		c.publishDeadLetter(ctx, j)
	}
}

func (c *consumer) handlerDone(ctx actor.Context, msg *handlerDone) {
	c.running--
	j := c.jobs[msg.id]
	if j == nil || j.stage != running || j.attempts != msg.attempt {
		c.pump()
		c.checkDrained()
		return
	}
	if msg.skipped {
		c.release(j)
		return
	}
	if !msg.panicked {
		c.breakerOutcome(ctx, msg.err) // outage hook: may pause the route
	}
	if msg.panicked {
		n := c.state.mark(j.keyOf())
		p := &HandlerPanic{Route: c.route.Name, MessageID: j.d.MessageId, Value: msg.value, Stack: msg.stack}
		c.log.Error("handler panicked; restarting the route's actor, the message goes back to the queue",
			zap.Any("panic", msg.value), zap.String("message_id", j.d.MessageId),
			zap.String("routing_key", j.d.RoutingKey), zap.Int("crashes", n), zap.ByteString("stack", msg.stack))
		// Let it crash: the supervisor restarts this actor. Closing the
		// channel first hands every delivery back at once instead of after
		// the restart backoff.
		c.abandon()
		panic(p)
	}
	switch action := actionOf(msg.err); {
	case action != Ack:
		c.settle(ctx, j, action, msg.err)
	case msg.settled:
		c.published(ctx, j, msg.pubErr)
	case j.early:
		j.early = false
		c.published(ctx, j, j.earlyErr)
	default:
		// Acked once every publish the handler made is confirmed: the
		// tracker reports. With StrictOrder it keeps its slot until then.
		j.stage = confirming
		if c.route.StrictOrder {
			c.waiting++
		}
	}
	c.pump()
}

// settle carries out action for j.
func (c *consumer) settle(ctx actor.Context, j *job, action Action, err error) {
	switch action {
	case Ack:
		j.d.Ack()
		c.done(j)
	case Drop:
		c.log.Warn("message dropped by handler", c.fields(j, err)...)
		j.d.Ack()
		c.done(j)
		c.event(j, Drop, err)
	case Retry:
		if c.breakerHolds(j, err) { // outage hook: paused, back to the queue uncounted
			return
		}
		c.state.fail(j.keyOf())
		if c.drain != nil {
			c.log.Warn("handler failed while draining; message returned to the queue", c.fields(j, err)...)
			c.release(j)
			return
		}
		if j.attempts >= c.policy.MaxAttempts {
			if c.delayRetry(ctx, j, err) { // outage hook: a delayed retry is left
				return
			}
			c.deadLetter(ctx, j, fmt.Errorf("failed %d attempts: %w", j.attempts, err))
			return
		}
		delay := c.policy.Backoff.Delay(j.attempts)
		c.log.Warn("handler failed; retrying", append(c.fields(j, err), zap.Duration("retry_in", delay))...)
		j.stage = retryWait
		c.waiting++
		c.after(delay, &retryDue{inc: c.inc, id: j.id})
	case Requeue:
		n := c.state.mark(j.keyOf())
		if n > c.policy.MaxRedeliveries {
			c.deadLetter(ctx, j, fmt.Errorf("requeued %d times: %w", n, err))
			return
		}
		c.log.Warn("handler asked to requeue", append(c.fields(j, err), zap.Int("requeues", n))...)
		j.d.Nack(true)
		delete(c.jobs, j.id)
		c.checkDrained()
	case DeadLetter:
		c.deadLetter(ctx, j, err)
	}
}

// release returns j to the queue without counting it against the message.
func (c *consumer) release(j *job) {
	j.d.Nack(true)
	delete(c.jobs, j.id)
	c.checkDrained()
}

// done forgets a job settled for good.
func (c *consumer) done(j *job) {
	delete(c.jobs, j.id)
	if j.keyed || j.d.Redelivered {
		// Only a message that was hashed can have a record.
		c.state.forget(j.keyOf())
	}
	c.checkDrained()
}

func (c *consumer) deadLetter(ctx actor.Context, j *job, reason error) {
	if reason == nil {
		reason = errors.New("dead-lettered by handler")
	}
	j.err = reason
	if c.policy.DeadLetterQueue == "" {
		c.log.Error("message rejected (no dead-letter queue configured)", c.fields(j, reason)...)
		j.d.Reject(false)
		c.done(j)
		c.event(j, DeadLetter, reason)
		return
	}
	j.stage = deadLettering
	c.publishDeadLetter(ctx, j)
}

func (c *consumer) publishDeadLetter(ctx actor.Context, j *job) {
	inc, id, self, sys, state, key := c.inc, j.id, c.self, c.sys, c.state, j.keyOf()
	req := deadLetterRequest(j.d, c.policy.DeadLetterQueue, c.route, j.attempts, j.err)
	stamp, _ := req.Msg.Headers[HeaderDeadLetteredAt].(string)
	ev := c.eventFor(j, DeadLetter, j.err)
	events := c.route.Events
	req.Done = func(err error) {
		if err == nil {
			// Recorded here, not in the actor: if the actor restarted
			// meanwhile, the redelivered original must still be known, and
			// the event must still be reported, exactly once.
			state.setDeadLettered(key, stamp)
			if events != nil {
				events(ev)
			}
		}
		sys.Root.Send(self, &deadLettered{inc: inc, id: id, err: err})
	}
	c.direct.Post(ctx.Send, c.conn, req)
}

func (c *consumer) deadLettered(ctx actor.Context, msg *deadLettered) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != deadLettering {
		return
	}
	if msg.err != nil {
		c.deadLetterFailed(j, msg.err, errors.Is(msg.err, broker.ErrUnroutable) || c.deadLetterFailing(ctx, msg.err))
		return
	}
	c.deadLetterRecovered(ctx)
	// The designed outcome for a bad message, not a fault of hato's: a
	// warning, without a stack trace of actor internals.
	c.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Warn("message dead-lettered",
		append(c.fields(j, j.err), zap.String("dead_letter_queue", c.policy.DeadLetterQueue))...)
	j.d.Ack()
	delete(c.jobs, j.id)
	c.checkDrained()
}

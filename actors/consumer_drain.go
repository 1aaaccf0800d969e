package actors

import (
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/supervisor"
)

// drainTimeout gives up on a drain at its deadline: handlers are cancelled
// and the session closed, so the broker gets back what is unfinished.
func (c *consumer) drainTimeout() {
	if c.drain == nil {
		return
	}
	c.log.Warn("drain deadline passed: returning unfinished deliveries to the broker",
		zap.Int("unfinished", len(c.jobs)), zap.Int("handlers_running", c.running))
	if c.drain.Unfinished != nil && len(c.jobs) > 0 {
		c.drain.Unfinished(len(c.jobs))
	}
	c.drainLate = true
	c.drainCount.unfinished = len(c.jobs)
	c.cancel()
	if c.session == nil && c.opening {
		c.abandonOpen() // a session still starting is closed when it does
	}
	c.finishDrain()
}

// drainStarted finishes the drain with a session that started after the
// drain began (issue 17-3e): its deliveries may already be handled, so it
// is cancelled as startDrain would have, and closed once nothing is held
// (at once if the drain deadline passed meanwhile).
func (c *consumer) drainStarted() {
	c.session.Cancel()
	if c.drainLate {
		c.finishDrain()
		return
	}
	c.checkDrained()
}

func (c *consumer) startDrain(msg *supervisor.Drain) {
	if c.drain != nil || c.drained {
		// Already draining (the first drain reports) or drained: this
		// incarnation holds nothing and never consumes again.
		close(msg.Done)
		return
	}
	c.drain = msg
	c.after(time.Until(msg.Deadline), &drainTimeout{inc: c.inc})
	if c.session != nil {
		c.session.Cancel()
	}
	c.drainCount.returned = len(c.queue)
	for _, j := range c.queue {
		j.d.Nack(true)
		delete(c.jobs, j.id)
	}
	c.queue = nil
	for _, j := range c.jobs {
		if j.stage == retryWait {
			c.waiting--
			c.release(j)
			c.drainCount.returned++
		}
	}
	c.drainCount.held = len(c.jobs)
	c.checkDrained()
}

// checkDrained finishes a drain once nothing is held.
func (c *consumer) checkDrained() {
	if c.drain != nil && len(c.jobs) == 0 {
		c.finishDrain()
	}
	c.breakerIdle() // outage hook: close a paused session once idle
}

// finishDrain closes the session (the broker requeues whatever is still
// unsettled); sessionEnded then completes the drain.
func (c *consumer) finishDrain() {
	if c.drainClosed {
		return
	}
	if c.session == nil {
		if !c.opening {
			c.drainDone()
		}
		// An open in progress ends in sessionStarted, which comes back here.
		return
	}
	c.drainClosed = true
	c.gate.close()
	c.session.Close()
}

// drainDone completes the drain: from now on the route stays idle.
func (c *consumer) drainDone() {
	n := c.drainCount
	c.log.Info("route drained",
		zap.Int("finished", n.held-n.unfinished),
		zap.Int("returned", n.returned+n.unfinished),
		zap.Int("unfinished_at_deadline", n.unfinished))
	close(c.drain.Done)
	c.drain = nil
	c.drained = true
	c.state.drained.Store(true)
}

// abandon cancels handlers and closes the channel: the broker redelivers
// everything this actor held.
func (c *consumer) abandon() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.work != nil {
		close(c.work)
		c.work = nil
	}
	c.gate.close()
	if c.session != nil {
		c.session.Close()
		c.session = nil
	}
	c.dropOpening()
	c.jobs = map[uint64]*job{}
	c.queue = nil
	c.waiting = 0
}

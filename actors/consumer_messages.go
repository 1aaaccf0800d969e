package actors

import (
	amqp "github.com/rabbitmq/amqp091-go"
)

// Async results; each carries the incarnation that started the work, and
// the session results also the session generation. Receive drops stale ones
// in one place (see stale) before dispatching.
type (
	sessionStarted struct {
		inc, gen uint64
		s        consumerSession
		q        amqp.Queue
		err      error
	}
	// deliveryArrived is part of the job it brings (one allocation).
	deliveryArrived struct {
		inc, gen uint64
		j        *job
	}
	sessionEnded struct {
		inc, gen uint64
		err      error
	}
	handlerDone struct {
		inc, id  uint64
		attempt  int
		err      error
		panicked bool
		skipped  bool // the handler never ran: the incarnation's context ended first
		value    any
		stack    []byte
		// settled: the handler succeeded and had no publish pending when it
		// returned, so this is the delivery's only outcome: pubErr is the
		// first publish failure, and if nil the worker acked the delivery.
		settled bool
		pubErr  error
	}
	// publishesSettled follows a handlerDone that was not settled: err is
	// the first publish failure, and if nil the delivery was acked. It is
	// not a message: it goes through the incarnation's settledBox.
	publishesSettled struct {
		inc, id uint64
		attempt int
		err     error
	}
	// settledWake tells the actor that its settledBox holds runs.
	settledWake  struct{ inc uint64 }
	retryDue     struct{ inc, id uint64 }
	deadLettered struct {
		inc, id uint64
		err     error
	}
	deadLetterRetry struct{ inc, id uint64 }
	reopen          struct{ inc uint64 }
	// openTimeout ends a channel request the connection actor did not
	// answer in channelReplyTimeout (see requestChannel).
	openTimeout  struct{ inc, nonce uint64 }
	drainTimeout struct{ inc uint64 }
	// workersIdle checks whether the route started no handler since starts
	// was counted (see Route.WorkerIdle).
	workersIdle struct{ inc, starts uint64 }
)

// stamped is an async result: it carries the incarnation that started the
// work. A result of an earlier incarnation is stale.
type stamped interface{ incarnation() uint64 }

// sessioned is a result of one consuming session: it is stale once the
// session generation moved on.
type sessioned interface{ sessionGen() uint64 }

func (m *sessionStarted) incarnation() uint64  { return m.inc }
func (m *deliveryArrived) incarnation() uint64 { return m.inc }
func (m *sessionEnded) incarnation() uint64    { return m.inc }
func (m *handlerDone) incarnation() uint64     { return m.inc }
func (m *settledWake) incarnation() uint64     { return m.inc }
func (m *retryDue) incarnation() uint64        { return m.inc }
func (m *deadLettered) incarnation() uint64    { return m.inc }
func (m *deadLetterRetry) incarnation() uint64 { return m.inc }
func (m *reopen) incarnation() uint64          { return m.inc }
func (m *openTimeout) incarnation() uint64     { return m.inc }
func (m *drainTimeout) incarnation() uint64    { return m.inc }
func (m *workersIdle) incarnation() uint64     { return m.inc }

func (m *sessionStarted) sessionGen() uint64  { return m.gen }
func (m *deliveryArrived) sessionGen() uint64 { return m.gen }
func (m *sessionEnded) sessionGen() uint64    { return m.gen }

// discard closes the session a stale open started.
func (m *sessionStarted) discard() {
	if m.s != nil {
		m.s.Close()
	}
}

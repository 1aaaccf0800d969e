package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// A handler that runs past Route.HandlerTimeout has its context cancelled;
// what it returns then is a failed attempt (a *HandlerTimeoutError), retried
// and then dead-lettered, and the route goes on with the next message.
func TestConsumerHandlerTimeoutCountsAsFailure(t *testing.T) {
	conn := &fakeConn{autoConfirm: true}
	slow := func(ctx context.Context, _ *broker.Delivery) error {
		<-ctx.Done() // runs until its deadline
		return ctx.Err()
	}
	r := newConsumer(t, &Route{
		Handle:         handlers{"slow": slow}.handle,
		HandlerTimeout: 20 * time.Millisecond,
		Failure:        FailurePolicy{MaxAttempts: 2, Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
	}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "slow", false)
	s.deliver(2, "ok", false)
	dl := conn.publish(t, 0)
	reason, _ := dl.Msg.Headers[HeaderReason].(string)
	if !strings.Contains(reason, "failed 2 attempts: handler ran past its deadline of 20ms: context deadline exceeded") {
		t.Errorf("reason = %q", reason)
	}
	waitFor(t, "both acked", func() bool { return s.has("ack 1") && s.has("ack 2") })
	ev := r.events.all()[0]
	var te *HandlerTimeoutError
	if !errors.Is(ev.Err, ErrHandlerTimeout) || !errors.Is(ev.Err, context.DeadlineExceeded) || !errors.As(ev.Err, &te) || te.Timeout != 20*time.Millisecond {
		t.Errorf("event error = %v", ev.Err)
	}
}

// A directive the handler returns after its deadline is its choice: it is
// not turned into a timeout.
func TestHandleWithinKeepsDirectives(t *testing.T) {
	r := &run{Context: context.Background(), d: &broker.Delivery{}}
	drop := &Directive{Action: Drop}
	err := handleWithin(r, func(ctx context.Context, _ *broker.Delivery) error {
		<-ctx.Done()
		return drop
	}, time.Millisecond)
	if err != drop {
		t.Errorf("err = %v, want the directive", err)
	}
	err = handleWithin(r, func(context.Context, *broker.Delivery) error { return errors.New("fast") }, time.Hour)
	if errors.Is(err, ErrHandlerTimeout) {
		t.Errorf("an error before the deadline became %v", err)
	}
}

// consumerTimeout is how a consumer session ends when RabbitMQ's
// consumer_timeout closes its channel.
var consumerTimeout = fmt.Errorf("channel closed: %w: %w", broker.ErrPreconditionFailed, &amqp.Error{
	Code: amqp.PreconditionFailed, Server: true, Recover: true,
	Reason: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out",
})

// A channel the broker closes with 406 (consumer_timeout) while a handler
// runs counts against that handler's message: after MaxRedeliveries such
// closes it is dead-lettered, not handled again forever. The messages that
// only waited behind it are not blamed, and flow.
func TestConsumerTimeoutCloseCountsAgainstRunningMessage(t *testing.T) {
	conn := &fakeConn{autoConfirm: true}
	started, release := make(chan struct{}, 4), make(chan struct{}, 4)
	slow := func(context.Context, *broker.Delivery) error {
		started <- struct{}{}
		<-release // ignores its context, as a handler stuck in I/O does
		return nil
	}
	r := newConsumer(t, &Route{
		Handle:  handlers{"slow": slow}.handle,
		Failure: FailurePolicy{MaxRedeliveries: 1, Backoff: fastRetry, DeadLetterQueue: "q.dlq"},
	}, conn)
	for i := range 2 {
		s := r.sessions.await(t, i)
		s.deliver(1, "slow", i > 0)
		s.deliver(2, fmt.Sprintf("ok%d", i), i > 0)
		recv(t, started)
		s.end(consumerTimeout)
		release <- struct{}{}
	}
	s := r.sessions.await(t, 2)
	s.deliver(1, "slow", true)
	s.deliver(2, "ok1", true)
	waitFor(t, "the slow message dead-lettered and the other acked", func() bool { return s.has("ack 1") && s.has("ack 2") })
	if dl := conn.publish(t, 0); dl.RoutingKey != "q.dlq" || string(dl.Msg.Body) != "slow" {
		t.Fatalf("dead-letter publish = key %q body %q", dl.RoutingKey, dl.Msg.Body)
	}
	if n := r.state.count(messageKey(s.delivery(2, "ok1", true))); n != 0 {
		t.Errorf("a message that waited behind the slow one was blamed %d times", n)
	}
}

// A channel lost for another reason (a connection loss) blames no one.
func TestConsumerConnectionLossBlamesNoOne(t *testing.T) {
	conn := &fakeConn{autoConfirm: true}
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	r := newConsumer(t, &Route{Handle: handlers{"slow": func(context.Context, *broker.Delivery) error {
		started <- struct{}{}
		<-release
		return nil
	}}.handle}, conn)
	s := r.sessions.await(t, 0)
	s.deliver(1, "slow", false)
	recv(t, started)
	s.end(broker.ErrClosed)
	r.sessions.await(t, 1)
	if n := r.state.count(messageKey(s.delivery(1, "slow", false))); n != 0 {
		t.Errorf("a connection loss counted %d times against the running message", n)
	}
}

// Issue 17 (3f): a dead-lettered mark does not live for the route's
// lifetime: once it expired, deliveries are no longer hashed to look it up
// and its record is gone.
func TestRouteStateDeadLetterMarksExpire(t *testing.T) {
	s := newRouteState(0)
	s.deadTTL = 20 * time.Millisecond
	key := messageKey(&broker.Delivery{Delivery: amqp.Delivery{MessageId: "m", Body: []byte("m")}})
	s.setDeadLettered(key, "stamp")
	if !s.hasDeadLettered() || !s.isDeadLettered(key, "") {
		t.Fatal("a fresh mark is not seen")
	}
	waitFor(t, "the mark to expire", func() bool { return !s.hasDeadLettered() })
	if s.isDeadLettered(key, "") {
		t.Error("an expired mark still suppresses the redelivery")
	}
	s.mu.Lock()
	n := len(s.marks)
	s.mu.Unlock()
	if n != 0 || s.deadMarks.Load() != 0 {
		t.Errorf("%d records and %d marks left after expiry", n, s.deadMarks.Load())
	}
}

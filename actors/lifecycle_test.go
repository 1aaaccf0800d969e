package actors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Issue 17-3a: a session whose channel dies while StartConsumer returns
// sends its sessionEnded before its sessionStarted. The actor must not
// install the dead session and report ready: it opens a new one.
func TestSessionEndedBeforeStartedReopens(t *testing.T) {
	route := &Route{Handle: func(context.Context, *broker.Delivery) error { return nil }}
	r := startConsumerWith(t, route, &fakeConn{}, &sessions{endOnStart: 1})
	s := r.sessions.await(t, 1) // the old code never opened a second session
	waitFor(t, "ChildReady", func() bool { return r.rep.readyCount() >= 1 })
	if n := r.rep.readyCount(); n != 1 {
		t.Fatalf("ready reported %d times, want once (for the live session)", n)
	}
	s.deliver(1, "m", false)
	waitFor(t, "the live session's delivery acked", func() bool { return s.has("ack 1") })
}

// Issue 17-3e: a drain that starts between the channel reply and
// sessionStarted, while a delivery of the starting session is handled. The
// session must be cancelled (basic.cancel) once it is the actor's, and
// closed only after the handler returned and its delivery was acked: the
// old code closed it at once, so the ack was lost and the message handled
// twice.
func TestDrainBeforeSessionStartedWaitsForHandlers(t *testing.T) {
	entered, release := make(chan struct{}), newGate(t)
	route := &Route{Handle: func(context.Context, *broker.Delivery) error {
		close(entered)
		release.wait()
		return nil
	}}
	hold := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(open)
	r := startConsumerWith(t, route, &fakeConn{}, &sessions{hold: hold})
	s := r.sessions.await(t, 0) // consuming; StartConsumer has not returned
	s.deliver(1, "m", false)
	recv(t, entered)
	drain := &supervisor.Drain{Deadline: time.Now().Add(time.Minute), Done: make(chan struct{})}
	r.sys.Root.Send(r.pid, drain)
	open() // sessionStarted follows the drain in the mailbox
	waitFor(t, "basic.cancel of the session", func() bool { return s.has("cancel") })
	if s.has("close") {
		t.Fatal("the session was closed while its delivery's handler ran")
	}
	release.open()
	waitClosed(t, drain.Done, "the drain")
	if a, c := s.index("ack 1"), s.index("close"); a < 0 || c < a {
		t.Fatalf("session log %v: want the delivery acked, then the session closed", s.log)
	}
	if late := s.late(); len(late) > 0 {
		t.Fatalf("settled after the session closed: %v", late)
	}
}

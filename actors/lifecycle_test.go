package actors

import (
	"context"
	"testing"

	"github.com/hato-go/hato/broker"
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

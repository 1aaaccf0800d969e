package actors

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Issue 19: draining was silent. A route says, once its drain completes,
// how many deliveries it finished and how many it returned to the queue.
func TestDrainLogsWhatItFinishedAndReturned(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	hold := newGate(t)
	running := make(chan struct{}, 1)
	r := newConsumer(t, &Route{Logger: zap.New(core), Handle: handlers{
		"slow": func(context.Context, *broker.Delivery) error {
			running <- struct{}{}
			hold.wait()
			return nil
		},
	}.handle}, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "slow", false)
	recv(t, running)
	s.deliver(2, "queued", false) // waits for the handler slot
	s.deliver(3, "queued", false)
	done := make(chan struct{})
	r.sys.Root.Send(r.pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: done})
	waitFor(t, "the queued deliveries returned", func() bool { return s.has("nack 2 requeue") && s.has("nack 3 requeue") })
	hold.open()
	waitClosed(t, done, "the drain")
	got := logs.FilterMessage("route drained").AllUntimed()
	if len(got) != 1 {
		t.Fatalf("%d \"route drained\" lines, want 1: %v", len(got), logs.AllUntimed())
	}
	f := got[0].ContextMap()
	if f["finished"] != int64(1) || f["returned"] != int64(2) || f["unfinished_at_deadline"] != int64(0) {
		t.Errorf("route drained %v, want finished 1, returned 2, unfinished 0", f)
	}
}

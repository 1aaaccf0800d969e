package actors

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Issue 17-3a: a session whose channel dies while StartSession returns
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
	s := r.sessions.await(t, 0) // consuming; StartSession has not returned
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

// Issue 17-3b: an OpenChannel sent while the connection actor is being
// respawned goes to dead letters. The route must ask again once its request
// timed out instead of waiting for ever.
func TestChannelRequestLostIsRepeated(t *testing.T) {
	route := &Route{Handle: func(context.Context, *broker.Delivery) error { return nil }}
	conn := &fakeConn{dropOpens: 1}
	r := startConsumerWith(t, route, conn, &sessions{}, func(cfg *ConsumerConfig) {
		cfg.replyTimeout = 20 * time.Millisecond
	})
	r.sessions.await(t, 0) // the old code never asked again
	waitFor(t, "ChildReady", func() bool { return r.rep.readyCount() == 1 })
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.opens != 2 {
		t.Fatalf("%d channel requests, want 2 (the lost one, then one more)", conn.opens)
	}
}

// stoppedConnection spawns a connection actor (to an unreachable broker)
// named "connection" and stops it from outside, as an embedder may; the
// root supervisor would spawn it again from props.
func stoppedConnection(t *testing.T, sys *actor.ActorSystem, direct *DirectPublish) (*actor.Props, *connShared, *actor.PID) {
	t.Helper()
	props, shared := connectionProps(ConnectionConfig{
		Name:      "connection",
		Direct:    direct,
		Publish:   broker.Config{URL: unreachable, ConnectionName: "pub", DialTimeout: time.Second},
		Consume:   broker.Config{URL: unreachable, ConnectionName: "sub", DialTimeout: time.Second},
		Reconnect: supervisor.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2},
	})
	pid, err := sys.Root.SpawnNamed(props, "connection")
	if err != nil {
		t.Fatal(err)
	}
	status(t, sys, pid)
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	return props, shared, pid
}

// Issue 17-3b: a connection actor spawned again after a stop (the root
// supervisor respawns a child stopped from outside) must hand publishes a
// closed channel returns back for resending, as before the stop, instead
// of failing them with ErrClosed.
func TestConnectionRespawnedResendsHandedBack(t *testing.T) {
	sys := newSystem(t)
	props, shared, pid := stoppedConnection(t, sys, nil)
	var err error
	if pid, err = sys.Root.SpawnNamed(props, "connection"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sys.Root.StopFuture(pid).Wait() })
	status(t, sys, pid) // started
	req, done := outcome("k")
	if !shared.handBack([]*broker.Request{req}) {
		t.Fatal("the respawned actor does not take publishes back: they fail with ErrClosed")
	}
	if !pending(done) {
		t.Fatalf("publish finished: %v", <-done)
	}
}

// Found by the simulation (seed 3547 of 30000): a handler panic while the
// route drains restarts the actor. The drain must complete (the restart
// hands everything back to the broker) and the new incarnation must stay
// idle; the old code left the drain waiting for its deadline and the new
// incarnation consumed again.
func TestCrashWhileDrainingCompletesTheDrain(t *testing.T) {
	entered, release := make(chan struct{}), newGate(t)
	route := &Route{Handle: func(context.Context, *broker.Delivery) error {
		close(entered)
		release.wait()
		panic("handler bug")
	}}
	r := newConsumer(t, route, &fakeConn{})
	s := r.sessions.await(t, 0)
	s.deliver(1, "m", false)
	recv(t, entered)
	drain := &supervisor.Drain{Deadline: time.Now().Add(time.Minute), Done: make(chan struct{})}
	r.sys.Root.Send(r.pid, drain)
	waitFor(t, "basic.cancel", func() bool { return s.has("cancel") })
	release.open()
	waitClosed(t, drain.Done, "the drain") // the old code: only at its deadline
	again := &supervisor.Drain{Deadline: time.Now().Add(time.Minute), Done: make(chan struct{})}
	r.sys.Root.Send(r.pid, again)
	waitClosed(t, again.Done, "a drain of the new incarnation")
	if n := r.sessions.starts(); n != 1 {
		t.Fatalf("%d sessions started, want 1: the drained route consumed again", n)
	}
}

// Issue 17-3b: publishes and channel requests sent to the connection
// actor's PID after it was stopped from outside (they go to dead letters)
// are served by the incarnation the root supervisor respawns, and a publish
// DirectPublish.Send counted no longer holds direct publishing off for good.
func TestConnectionRespawnedServesPublishesSentWhileStopped(t *testing.T) {
	sys := newSystem(t)
	direct := &DirectPublish{}
	props, _, pid := stoppedConnection(t, sys, direct)
	var err error
	posted, postedDone := outcome("posted")
	sent, sentDone := outcome("sent")
	replies := make(chan *ChannelReply, 1)
	inbox := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*ChannelReply); ok {
			replies <- r
		}
	}))
	direct.PostOpen(sys.Root.Send, pid, &OpenChannel{ReplyTo: inbox, Nonce: 7})
	direct.Post(sys.Root.Send, pid, posted)
	if direct.Send(sys.Root, pid, sent) {
		t.Fatal("handed over directly with no channel open")
	}
	if pid, err = sys.Root.SpawnNamed(props, "connection"); err != nil {
		t.Fatal(err)
	}
	if st := status(t, sys, pid); st.Buffered != 2 {
		t.Fatalf("the respawned actor buffers %d publishes, want the 2 sent while it was stopped", st.Buffered)
	}
	if n := direct.queued.Load(); n != 0 {
		t.Fatalf("%d publishes still counted by Send: direct publishing held off", n)
	}
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-replies: // the channel request was the new incarnation's
		if r.Nonce != 7 || !errors.Is(r.Err, ErrClosed) {
			t.Errorf("channel reply %+v, want nonce 7 with ErrClosed at the final stop", r)
		}
	case <-time.After(waitLimit):
		t.Error("the channel request sent while the actor was stopped was never answered")
	}
	for name, done := range map[string]chan error{"posted": postedDone, "sent": sentDone} {
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s: %v, want ErrClosed at the final stop", name, err)
			}
		case <-time.After(waitLimit):
			t.Errorf("%s: never resolved", name)
		}
	}
}

// Issue 17-3b: publishes still in the connection actor's mailbox when it is
// stopped are dropped with the mailbox; they must be resolved (ErrClosed,
// as buffered ones) instead of leaving their callers to their deadlines,
// and taken once only if they are delivered after all.
func TestConnectionStoppedWithPublishesInItsMailbox(t *testing.T) {
	sys := newSystem(t)
	m := newCsim(sys, 1)
	t.Cleanup(func() { sys.ProcessRegistry.Remove(m.self); sys.ProcessRegistry.Remove(m.parent) })
	m.actor = m.produce()
	m.receive(&actor.Started{})
	m.publish() // a consumer's dead-letter copy: Post
	m.send()    // a handler's publish: Send, counted
	if len(m.inbox) != 2 {
		t.Fatalf("%d messages in the mailbox, want 2", len(m.inbox))
	}
	inbox := slices.Clone(m.inbox)
	m.stopActor()
	for _, r := range m.reqs {
		if r.dones != 1 || !errors.Is(r.err, ErrClosed) {
			t.Errorf("publish %d: %d outcomes (%v), want ErrClosed once", r.id, r.dones, r.err)
		}
	}
	if n := m.direct.queued.Load(); n != 0 {
		t.Errorf("%d publishes still counted by Send: direct publishing held off", n)
	}
	for _, msg := range inbox {
		if msg.(*Publish).Take() {
			t.Error("a publish resolved at the stop can be taken again")
		}
	}
	m.finish()
}

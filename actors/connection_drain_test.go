package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Defect 10: a publish handed back by a closed publisher, not yet taken by
// the actor, is still outstanding: a drain must not report clean.
func TestDrainCountsHandedBackPublishes(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	r := &broker.Request{Done: func(error) {}}
	c := &connection{
		shared: &connShared{handback: []*broker.Request{r}},
		log:    zap.NewNop(),
		sys:    sys,
		self:   actor.NewPID(sys.Address(), "nobody"),
	}
	done := make(chan struct{})
	c.drain = &supervisor.Drain{Deadline: time.Now().Add(time.Hour), Done: done}
	c.checkDrain()
	select {
	case <-done:
		t.Fatal("drain reported clean while a publish waits in hand-over between publishers")
	default:
	}
}

// inTransitFixture is a connection actor's state with one publish in flight
// on a real broker.Publisher over a simulated channel.
func inTransitFixture(t *testing.T) (*connection, *csim, *csimChan, *broker.Publisher) {
	t.Helper()
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	m := newCsim(sys, 1)
	shared := &connShared{}
	ch := &csimChan{m: m, id: 1, next: 1}
	m.chans = append(m.chans, ch)
	p, err := broker.NewPublisherOn(ch, broker.PublisherConfig{MaxInFlight: 4,
		Closed: func(_ *broker.Publisher, _ error, unfinished []*broker.Request) { shared.handBack(unfinished) }})
	if err != nil {
		t.Fatal(err)
	}
	r := m.newRequest()
	if !p.Submit(r.req) {
		t.Fatal("Submit refused")
	}
	m.waitFor(func() bool { return len(ch.inflight) == 1 })
	if len(ch.inflight) != 1 {
		t.Fatal("the publish was never written")
	}
	c := &connection{cfg: ConnectionConfig{fx: csimFx{m: m}, Direct: &DirectPublish{}}, shared: shared,
		publisher: p, log: zap.NewNop(), sys: sys, self: m.self}
	return c, m, ch, p
}

// A publisher closing while outstanding() runs hands its requests back
// before its count drops to zero; outstanding must read the publisher
// before the hand-back, or a request in transit is counted nowhere and a
// drain reports clean with it unconfirmed.
func TestOutstandingCountsPublishesInTransit(t *testing.T) {
	c, m, ch, p := inTransitFixture(t)
	c.beforeHandback = func() {
		c.beforeHandback = nil
		m.mu.Lock()
		ch.die(&amqp.Error{Code: amqp.InternalError, Reason: "test: channel closed", Server: true})
		m.mu.Unlock()
		<-p.Done()
	}
	if n := c.outstanding(); n < 1 {
		t.Fatalf("outstanding = %d with one publish handed back while counting", n)
	}
}

// A connection lost with publishes in flight: the actor lets go of the
// publisher at once, the publisher hands them back only once it notices
// the close. A drain in between must not report clean.
func TestDrainWaitsForPublisherLetGoWithItsConnection(t *testing.T) {
	c, m, ch, p := inTransitFixture(t)
	c.closeConns()
	done := make(chan struct{})
	c.drain = &supervisor.Drain{Deadline: time.Now().Add(time.Hour), Done: done}
	c.checkDrain()
	select {
	case <-done:
		t.Fatal("drain reported clean while the publisher let go of still held a publish")
	default:
	}
	m.mu.Lock()
	ch.die(&amqp.Error{Code: amqp.ConnectionForced, Reason: "test: connection closed"})
	m.mu.Unlock()
	<-p.Done()
	c.checkDrain()
	select {
	case <-done:
		t.Fatal("drain reported clean with the publish handed back and not resent")
	default:
	}
	if len(c.shared.retired) != 0 {
		t.Errorf("%d closed publishers still retired", len(c.shared.retired))
	}
}

// Issue 17-4: a publishing channel the broker closes (a channel-level
// error, e.g. dead-lettering refused for permissions) while the connection
// lives on is not a disconnection: Status keeps Connected and clears
// Publishing until the channel is open again.
func TestStatusConnectedAcrossAPublishingChannelReopen(t *testing.T) {
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	m := newCsim(sys, 1)
	t.Cleanup(func() { sys.ProcessRegistry.Remove(m.self); sys.ProcessRegistry.Remove(m.parent) })
	c := m.produce().(*connection)
	m.actor = c
	m.receive(&actor.Started{})
	m.waitFor(func() bool { return len(m.dials) == 1 })
	m.answerDial(m.dials[0], nil)
	m.waitFor(func() bool { return len(m.inbox) == 1 })
	m.deliver() // dialResult: opens the publishing channel
	m.waitFor(func() bool { return len(m.opens) == 1 })
	m.answerOpen(m.opens[0], nil)
	m.waitFor(func() bool { return len(m.inbox) == 1 })
	m.deliver() // publisherResult
	if st := c.status(); !st.Connected || !st.Publishing {
		t.Fatalf("status after the channel opened: %+v", st)
	}
	m.send() // one in flight, so the channel can die under it
	m.waitFor(func() bool { return len(m.chans) == 1 && len(m.chans[0].inflight) == 1 })
	m.channelDies(m.chans[0])
	m.waitFor(func() bool { return len(m.inbox) == 1 })
	m.deliver() // publisherClosed
	if st := c.status(); !st.Connected || st.Publishing {
		t.Fatalf("status while the publishing channel reopens: Connected %v Publishing %v, want true false", st.Connected, st.Publishing)
	}
	m.finish()
}

// A dial that completes around a stop (Stop during Start): its connections
// must be closed whether its result was still in the stopped mailbox or
// arrived after the stop; the old code dropped the result with the mailbox
// and leaked both connections (found by TestStopWhileStartRunsNeverPanicsOrHangs).
func TestDialResultAroundAStopIsClosed(t *testing.T) {
	for _, inMailbox := range []bool{true, false} {
		sys := actor.NewActorSystem()
		m := newCsim(sys, 1)
		m.actor = m.produce()
		m.receive(&actor.Started{})
		m.waitFor(func() bool { return len(m.dials) == 1 })
		if inMailbox {
			m.answerDial(m.dials[0], nil)
			m.waitFor(func() bool { return len(m.inbox) == 1 })
			m.stopActor()
		} else {
			d := m.dials[0]
			m.stopActor()
			m.answerDial(d, nil)
		}
		m.waitFor(func() bool {
			for _, c := range m.conns {
				if !c.closing && !c.closed {
					return false
				}
			}
			return len(m.conns) == 2
		})
		m.mu.Lock()
		for _, c := range m.conns {
			if !c.closing && !c.closed {
				t.Errorf("result in the mailbox at the stop %v: conn %d left open", inMailbox, c.id)
			}
		}
		m.mu.Unlock()
		m.stopped = true
		m.finish()
		sys.ProcessRegistry.Remove(m.self)
		sys.ProcessRegistry.Remove(m.parent)
		sys.Shutdown()
	}
}

//go:build integration

package actors

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
	"github.com/hato-go/hato/test/brokertest"
)

// connHarness runs a connection actor under a parent actor with protoactor's
// default strategy (restart on panic), as the root supervisor would.
type connHarness struct {
	sys    *actor.ActorSystem
	pid    *actor.PID
	parent *actor.PID
}

func startConn(t *testing.T, url string, opts ...func(*ConnectionConfig)) *connHarness {
	t.Helper()
	sys := actor.NewActorSystem()
	t.Cleanup(sys.Shutdown)
	cfg := ConnectionConfig{
		Name:      "connection",
		Publish:   broker.Config{URL: url, ConnectionName: brokertest.UniqueName("hato-test-", t.Name()+"-pub")},
		Consume:   broker.Config{URL: url, ConnectionName: brokertest.UniqueName("hato-test-", t.Name()+"-sub")},
		Reconnect: supervisor.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	}
	for _, o := range opts {
		o(&cfg)
	}
	child := make(chan *actor.PID, 1)
	parent := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*actor.Started); ok {
			child <- ctx.Spawn(ConnectionProps(cfg))
		}
	}))
	h := &connHarness{sys: sys, pid: <-child, parent: parent}
	t.Cleanup(func() { _ = sys.Root.StopFuture(parent).Wait() })
	return h
}

func (h *connHarness) status(t *testing.T) *ConnectionStatus {
	t.Helper()
	res, err := h.sys.Root.RequestFuture(h.pid, &StatusRequest{}, 5*time.Second).Result()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return res.(*ConnectionStatus)
}

// waitStatus polls the status until ok holds.
func (h *connHarness) waitStatus(t *testing.T, what string, ok func(*ConnectionStatus) bool) *ConnectionStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := h.status(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: last status %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connected(st *ConnectionStatus) bool { return st.Connected }

// replies spawns an actor that forwards every ChannelReply it receives.
func (h *connHarness) replies(t *testing.T) (*actor.PID, <-chan *ChannelReply) {
	t.Helper()
	ch := make(chan *ChannelReply, 16)
	pid := h.sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(*ChannelReply); ok {
			ch <- r
		}
	}))
	return pid, ch
}

// Defect 14: a panic-restart of the connection actor must not lose routes
// waiting for a channel, and messages of the earlier incarnation must not
// match the new one's connections.
func TestConnectionRestartIncarnation(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	proxy, purl := brokertest.Proxy(t, url)
	h := startConn(t, purl)
	first := h.waitStatus(t, "first connection", connected)

	// The broker becomes unreachable; a route asks for a channel and waits.
	proxy.SetRefuse(true)
	proxy.CutAll()
	h.waitStatus(t, "disconnected", func(st *ConnectionStatus) bool { return !st.Connected })
	probe, got := h.replies(t)
	h.sys.Root.Send(h.pid, &OpenChannel{ReplyTo: probe, Nonce: 7})
	// A nil request makes the actor panic: its parent restarts it.
	h.sys.Root.Send(h.pid, &Publish{})
	proxy.SetRefuse(false)

	select {
	case r := <-got:
		if r.Nonce != 7 || r.Err != nil || r.Channel == nil {
			t.Fatalf("reply after restart: nonce %d, err %v, channel %v", r.Nonce, r.Err, r.Channel != nil)
		}
		_ = r.Channel.Close()
	case <-time.After(20 * time.Second):
		t.Fatal("a route waiting for a channel got no reply after the connection actor restarted")
	}
	st := h.waitStatus(t, "reconnected after the restart", connected)
	if st.Generation <= first.Generation {
		t.Fatalf("generation %d after restart, was %d: the new incarnation reuses generation numbers, so old messages match it",
			st.Generation, first.Generation)
	}

	// A connection-lost report of the first incarnation, even one naming
	// the current generation, must not tear down the new connections.
	old := stamp{inc: 1, gen: st.Generation}
	h.sys.Root.Send(h.pid, &connLost{stamp: old, err: errors.New("old incarnation's connection closed")})
	if after := h.status(t); !after.Connected || after.Generation != st.Generation {
		t.Fatalf("a stale connLost matched the new incarnation: status %+v, was %+v", after, st)
	}
}

// Defect 1b: a publish amqp091-go cannot encode (here a message id longer
// than a short string) fails that publish only, with a clear error; it is
// never handed back and resent on every reconnect.
func TestConnectionFailsUnencodablePublish(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	h := startConn(t, url)
	before := h.waitStatus(t, "connected", connected)

	bad := make(chan error, 1)
	h.sys.Root.Send(h.pid, &Publish{Req: &broker.Request{
		RoutingKey: "nowhere",
		Msg:        amqp.Publishing{MessageId: strings.Repeat("m", 300), Body: []byte("x")},
		Done:       func(err error) { bad <- err },
	}})
	select {
	case err := <-bad:
		if err == nil || !strings.Contains(err.Error(), "255") {
			t.Fatalf("unencodable publish finished with %v, want an error naming the 255-byte limit", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("unencodable publish never finished (status %+v): it is resent on every reconnect", h.status(t))
	}

	good := make(chan error, 1)
	h.sys.Root.Send(h.pid, &Publish{Req: &broker.Request{
		RoutingKey: "nowhere",
		Msg:        amqp.Publishing{Body: []byte("ok")},
		Done:       func(err error) { good <- err },
	}})
	select {
	case err := <-good:
		if err != nil {
			t.Fatalf("next publish: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("next publish never confirmed")
	}
	if st := h.status(t); st.Generation != before.Generation {
		t.Fatalf("generation %d, was %d: the bad publish cost the connection", st.Generation, before.Generation)
	}
}

// submitDirect hands a fresh request to d until d accepts one, and returns
// its outcome channel.
func submitDirect(t *testing.T, d *DirectPublish, key string) chan error {
	t.Helper()
	var done chan error
	waitFor(t, "a direct publish accepted", func() bool {
		var r *broker.Request
		r, done = outcome(key)
		return d.Submit(r)
	})
	return done
}

// DirectPublish hands publishes to the open publishing channel without the
// actor's mailbox; it declines while that channel is down, so nothing is
// lost across a channel error, and after the actor stopped.
func TestDirectPublish(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	var d DirectPublish
	h := startConn(t, url, func(c *ConnectionConfig) { c.Direct = &d })
	if err := recv(t, submitDirect(t, &d, "direct")); err != nil {
		t.Fatalf("direct publish: %v", err)
	}
	before := h.status(t)

	// A publish to a missing exchange closes the publishing channel. Every
	// request handed over meanwhile, directly or (when Submit declines)
	// through the mailbox, still gets its outcome.
	bad, badDone := outcome("x")
	bad.Exchange = "hato-missing-exchange"
	if !d.Submit(bad) {
		t.Fatal("Submit declined while connected with nothing buffered")
	}
	var outcomes []chan error
	for i := 0; i < 50; i++ {
		r, done := outcome("after")
		if !d.Submit(r) {
			h.sys.Root.Send(h.pid, &Publish{Req: r})
		}
		outcomes = append(outcomes, done)
	}
	if err := recv(t, badDone); err == nil {
		t.Fatal("a publish to a missing exchange was confirmed")
	}
	for i, done := range outcomes {
		if err := recv(t, done); err != nil {
			t.Fatalf("publish %d after the channel error: %v", i, err)
		}
	}
	if err := recv(t, submitDirect(t, &d, "reopened")); err != nil {
		t.Fatalf("direct publish on the reopened channel: %v", err)
	}
	if st := h.status(t); st.Generation != before.Generation {
		t.Fatalf("generation %d, was %d: a channel error cost the connection", st.Generation, before.Generation)
	}

	if err := h.sys.Root.StopFuture(h.parent).Wait(); err != nil {
		t.Fatal(err)
	}
	if r, _ := outcome("stopped"); d.Submit(r) {
		t.Fatal("Submit accepted a request after the connection actor stopped")
	}
}

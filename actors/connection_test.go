package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// The connection actor's tests need no broker: it dials an address where
// nothing listens, so it stays disconnected and everything it holds waits.
const unreachable = "amqp://guest:guest@127.0.0.1:1/"

func newDisconnected(t *testing.T, buffer int) (*actor.ActorSystem, *actor.PID, *reports) {
	t.Helper()
	sys := newSystem(t)
	pid, rep := spawnUnder(t, sys, ConnectionProps(ConnectionConfig{
		Name:          "connection",
		Publish:       broker.Config{URL: unreachable, ConnectionName: "pub", DialTimeout: time.Second},
		Consume:       broker.Config{URL: unreachable, ConnectionName: "sub", DialTimeout: time.Second},
		Reconnect:     supervisor.Backoff{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond, Multiplier: 2},
		PublishBuffer: buffer,
	}))
	return sys, pid, rep
}

func status(t *testing.T, sys *actor.ActorSystem, pid *actor.PID) *ConnectionStatus {
	t.Helper()
	res, err := sys.Root.RequestFuture(pid, &StatusRequest{}, waitLimit).Result()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	st, ok := res.(*ConnectionStatus)
	if !ok {
		t.Fatalf("status reply %T", res)
	}
	return st
}

// outcome is a publish request whose outcome the test can wait for.
func outcome(key string) (*broker.Request, chan error) {
	ch := make(chan error, 1)
	return &broker.Request{RoutingKey: key, Done: func(err error) { ch <- err }}, ch
}

func pending(ch chan error) bool { return len(ch) == 0 }

// While disconnected, publishes wait in the buffer; beyond it they fail
// with ErrBufferFull; a request its caller abandoned frees its place; on
// stop every waiting publish and channel request ends with ErrClosed.
func TestConnectionBuffersWhileDisconnected(t *testing.T) {
	sys, pid, rep := newDisconnected(t, 2)
	st := status(t, sys, pid)
	if st.Connected || st.Generation != 0 || st.Buffered != 0 {
		t.Fatalf("initial status = %+v", st)
	}
	r1, done1 := outcome("a")
	r2, done2 := outcome("b")
	r3, done3 := outcome("c")
	sys.Root.Send(pid, &Publish{Req: r1})
	sys.Root.Send(pid, &Publish{Req: r2})
	sys.Root.Send(pid, &Publish{Req: r3})
	if err := recv(t, done3); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("third publish with a buffer of 2: %v, want ErrBufferFull", err)
	}
	if st := status(t, sys, pid); st.Buffered != 2 || st.Connected {
		t.Fatalf("status = %+v, want 2 buffered", st)
	}
	if !pending(done1) || !pending(done2) {
		t.Fatal("a buffered publish finished while disconnected")
	}
	// The caller of r1 gives up: its place is free again.
	if !r1.Abandon(context.Canceled) {
		t.Fatal("could not abandon a buffered request")
	}
	r4, done4 := outcome("d")
	sys.Root.Send(pid, &Publish{Req: r4})
	if st := status(t, sys, pid); st.Buffered != 2 {
		t.Fatalf("status = %+v, want 2 buffered after the abandoned one left", st)
	}
	if !pending(done4) {
		t.Fatalf("publish after an abandoned one: %v", <-done4)
	}
	// A consumer waits for its channel.
	reply := actor.NewFuture(sys, waitLimit)
	sys.Root.Send(pid, &OpenChannel{ReplyTo: reply.PID(), Nonce: 7})
	_ = status(t, sys, pid) // the OpenChannel was handled
	if err := sys.Root.StopFuture(pid).Wait(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan error{done2, done4} {
		if err := recv(t, ch); !errors.Is(err, ErrClosed) {
			t.Errorf("buffered publish on stop: %v, want ErrClosed", err)
		}
	}
	res, err := reply.Result()
	if err != nil {
		t.Fatalf("no channel reply on stop: %v", err)
	}
	if cr, ok := res.(*ChannelReply); !ok || cr.Nonce != 7 || cr.Channel != nil || !errors.Is(cr.Err, ErrClosed) {
		t.Errorf("channel reply on stop = %#v", res)
	}
	if f := rep.failedReports(); len(f) != 0 {
		t.Errorf("an unreachable broker was reported as %v; only a refusal is permanent", f)
	}
}

// A drain waits for buffered publishes until its deadline, then reports
// them unfinished; with nothing outstanding it is done at once.
func TestConnectionDrain(t *testing.T) {
	sys, pid, _ := newDisconnected(t, 10)
	idle := make(chan struct{})
	sys.Root.Send(pid, &supervisor.Drain{Deadline: time.Now().Add(waitLimit), Done: idle})
	waitClosed(t, idle, "idle drain")

	r, done := outcome("a")
	sys.Root.Send(pid, &Publish{Req: r})
	drained := make(chan struct{})
	unfinished := make(chan int, 1)
	sys.Root.Send(pid, &supervisor.Drain{
		Deadline: time.Now().Add(30 * time.Millisecond), Done: drained,
		Unfinished: func(n int) { unfinished <- n },
	})
	waitClosed(t, drained, "drain at its deadline")
	if n := recv(t, unfinished); n != 1 {
		t.Errorf("unfinished = %d, want 1", n)
	}
	if !pending(done) {
		t.Errorf("drain finished the buffered publish: %v", <-done)
	}
}

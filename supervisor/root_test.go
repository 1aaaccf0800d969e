package supervisor

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hato-go/hato/internal/leak"
)

func TestMain(m *testing.M) {
	leak.VerifyTestMain(m)
}

// probe is a child that reports ready, panics on "boom" and drains on
// request.
type probe struct {
	name    string
	started *atomic.Int32
	drained *atomic.Int32
}

func (p *probe) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		p.started.Add(1)
		ctx.Send(ctx.Parent(), &ChildReady{Name: p.name})
	case string:
		switch msg {
		case "boom":
			panic("boom")
		case "fail-permanently":
			ctx.Send(ctx.Parent(), &ChildFailed{Name: p.name, Err: errors.New("refused"), Permanent: true})
		case "lose-connection":
			ctx.Send(ctx.Parent(), &ChildFailed{Name: p.name, Err: errors.New("connection lost")})
			ctx.Send(ctx.Parent(), &ChildReady{Name: p.name})
		}
	case *Drain:
		p.drained.Add(1)
		close(msg.Done)
	}
}

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) count(child string, kind EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Child == child && e.Kind == kind {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type harness struct {
	sys     *actor.ActorSystem
	root    *actor.PID
	rec     *recorder
	started map[string]*atomic.Int32
	drained map[string]*atomic.Int32
}

func newHarness(t *testing.T, policy Policy, names ...string) *harness {
	t.Helper()
	h := &harness{
		sys:     actor.NewActorSystem(actor.WithLoggerFactory(quietLogger)),
		rec:     &recorder{},
		started: map[string]*atomic.Int32{},
		drained: map[string]*atomic.Int32{},
	}
	var specs []ChildSpec
	for _, n := range names {
		st, dr := &atomic.Int32{}, &atomic.Int32{}
		h.started[n], h.drained[n] = st, dr
		specs = append(specs, ChildSpec{
			Name:   n,
			Props:  actor.PropsFromProducer(func() actor.Actor { return &probe{name: n, started: st, drained: dr} }),
			Policy: policy,
		})
	}
	root, err := h.sys.Root.SpawnNamed(Props(Config{Children: specs, OnEvent: h.rec.add}), "root")
	if err != nil {
		t.Fatal(err)
	}
	h.root = root
	t.Cleanup(func() {
		_ = h.sys.Root.StopFuture(root).Wait()
		h.sys.Shutdown()
	})
	return h
}

func (h *harness) child(name string) *actor.PID {
	return actor.NewPID(h.sys.Address(), "root/"+name)
}

func (h *harness) awaitReady(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	h.sys.Root.Send(h.root, &AwaitReady{Done: done})
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("AwaitReady never answered")
		return nil
	}
}

var fastPolicy = Policy{
	Backoff:     Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, Multiplier: 2, Jitter: -1},
	MaxRestarts: 3,
	Window:      time.Minute,
}

func TestRootRestartsACrashedChild(t *testing.T) {
	h := newHarness(t, fastPolicy, "a", "b")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	h.sys.Root.Send(h.child("a"), "boom")
	waitFor(t, 5*time.Second, func() bool { return h.started["a"].Load() == 2 }, "a restarted")
	if n := h.rec.count("a", EventFailed); n != 1 {
		t.Errorf("EventFailed for a: %d, want 1", n)
	}
	waitFor(t, time.Second, func() bool { return h.rec.count("a", EventRestarted) == 1 }, "EventRestarted")
	if got := h.started["b"].Load(); got != 1 {
		t.Errorf("sibling b restarted %d times; one-for-one must leave it alone", got-1)
	}
}

func TestRootGivesUpLoudlyWhenTheBudgetIsExhausted(t *testing.T) {
	h := newHarness(t, fastPolicy, "a")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		h.sys.Root.Send(h.child("a"), "boom")
		want := int32(i + 1)
		waitFor(t, 5*time.Second, func() bool { return h.started["a"].Load() == want }, "restart")
	}
	h.sys.Root.Send(h.child("a"), "boom")
	waitFor(t, 5*time.Second, func() bool { return h.rec.count("a", EventGaveUp) == 1 }, "EventGaveUp")
	if err := h.awaitReady(t); !errors.Is(err, ErrGaveUp) {
		t.Errorf("AwaitReady after give-up = %v, want ErrGaveUp", err)
	}
	// It stays stopped: a message to it is a dead letter, no new start.
	h.sys.Root.Send(h.child("a"), "boom")
	if got := h.started["a"].Load(); got != 4 {
		t.Errorf("started %d times, want 4 (no restart after giving up)", got)
	}
}

func TestRootRespawnsAChildStoppedFromOutside(t *testing.T) {
	h := newHarness(t, fastPolicy, "a")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	if err := h.sys.Root.StopFuture(h.child("a")).Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return h.started["a"].Load() == 2 }, "a respawned")
	if h.rec.count("a", EventStopped) != 1 {
		t.Error("no EventStopped reported")
	}
	waitFor(t, time.Second, func() bool { return h.rec.count("a", EventRespawned) == 1 }, "EventRespawned")
	// And poisoning works the same way.
	h.sys.Root.Poison(h.child("a"))
	waitFor(t, 5*time.Second, func() bool { return h.started["a"].Load() == 3 }, "a respawned after poison")
}

func TestRootPermanentFailureFailsAwaitReady(t *testing.T) {
	h := newHarness(t, fastPolicy, "a", "b")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	h.sys.Root.Send(h.child("b"), "fail-permanently")
	waitFor(t, 5*time.Second, func() bool { return h.rec.count("b", EventGaveUp) == 1 }, "EventGaveUp")
	if err := h.awaitReady(t); err == nil {
		t.Error("AwaitReady succeeded after a permanent failure")
	}
}

func TestRootDrainsChildrenAndDoesNotRespawnThem(t *testing.T) {
	h := newHarness(t, fastPolicy, "a", "b", "c")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	h.sys.Root.Send(h.root, &DrainChildren{Names: []string{"a", "b"}, Deadline: time.Now().Add(time.Second), Done: done})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("drain never completed")
	}
	if h.drained["a"].Load() != 1 || h.drained["b"].Load() != 1 || h.drained["c"].Load() != 0 {
		t.Errorf("drained a=%d b=%d c=%d, want 1 1 0", h.drained["a"].Load(), h.drained["b"].Load(), h.drained["c"].Load())
	}
	// A drained child that stops is not respawned.
	if err := h.sys.Root.StopFuture(h.child("a")).Wait(); err != nil {
		t.Fatal(err)
	}
	h.sys.Root.Send(h.root, &AwaitReady{Done: make(chan error, 1)}) // a round trip through the root
	waitFor(t, time.Second, func() bool { return h.rec.count("a", EventStopped) == 0 }, "no EventStopped")
	if h.started["a"].Load() != 1 {
		t.Error("drained child was respawned")
	}
}

func TestRootReportsTransientLossAndRecovery(t *testing.T) {
	h := newHarness(t, fastPolicy, "a")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	h.sys.Root.Send(h.child("a"), "lose-connection")
	waitFor(t, 5*time.Second, func() bool { return h.rec.count("a", EventReady) == 2 }, "ready again")
	if h.rec.count("a", EventUnavailable) != 1 || h.rec.count("a", EventGaveUp) != 0 {
		t.Errorf("unavailable %d, gave up %d; want 1 and 0", h.rec.count("a", EventUnavailable), h.rec.count("a", EventGaveUp))
	}
	if h.started["a"].Load() != 1 {
		t.Error("a transient loss must not restart the child")
	}
}

// A child in restart backoff has its mailbox suspended: it never sees a
// Drain. The drain must not wait for it until the deadline.
func TestRootDrainDoesNotWaitForAChildInRestartBackoff(t *testing.T) {
	slow := Policy{
		Backoff:     Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 2, Jitter: -1},
		MaxRestarts: 3,
		Window:      time.Hour,
	}
	h := newHarness(t, slow, "a", "b")
	if err := h.awaitReady(t); err != nil {
		t.Fatal(err)
	}
	h.sys.Root.Send(h.child("a"), "boom")
	waitFor(t, 5*time.Second, func() bool { return h.rec.count("a", EventFailed) == 1 }, "a in restart backoff")

	done := make(chan struct{})
	var unfinished atomic.Int32
	h.sys.Root.Send(h.root, &DrainChildren{
		Deadline: time.Now().Add(20 * time.Second), Done: done,
		Unfinished: func(string, int) { unfinished.Add(1) },
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drain still waiting after 10s of a 20s deadline: it waits for the suspended child")
	}
	if h.drained["b"].Load() != 1 {
		t.Error("the healthy sibling was not drained")
	}
	if n := unfinished.Load(); n != 0 {
		t.Errorf("%d children reported unfinished work", n)
	}
	// The suspended child is stopped, not restarted or respawned.
	waitFor(t, 5*time.Second, func() bool {
		_, alive := h.sys.ProcessRegistry.Get(h.child("a"))
		return !alive
	}, "the suspended child stopped")
	if h.started["a"].Load() != 1 || h.rec.count("a", EventRestarted) != 0 || h.rec.count("a", EventStopped) != 0 {
		t.Errorf("suspended child started %d times, restarted %d, stopped-from-outside %d; want 1 0 0",
			h.started["a"].Load(), h.rec.count("a", EventRestarted), h.rec.count("a", EventStopped))
	}
}

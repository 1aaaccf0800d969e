//go:build integration

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestLifecycleHooksRunInOrderAndOnStopMayPublish(t *testing.T) {
	key := testutil.Key(t, "goodbye")
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	got := testutil.NewCollector()
	sink := newService(t, "hooks-sink")
	mustSubscribe(t, sink, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, sink)

	svc := newService(t, "hooks")
	svc.OnStart(func(ctx context.Context) error {
		note("start")
		if err := svc.Publish(ctx, "too early", key); !errorsIs(err, hato.ErrNotStarted) {
			t.Errorf("publish in OnStart: %v, want ErrNotStarted", err)
		}
		return nil
	})
	svc.OnStarted(func(ctx context.Context) error { note("started"); return nil })
	svc.OnStop(func(ctx context.Context) error {
		note("stop")
		return svc.Publish(ctx, map[string]any{"id": "goodbye"}, key)
	})
	mustSubscribe(t, svc, testutil.Key(t, "unused"), func(ctx context.Context, m *hato.Message[any]) error {
		note("handler")
		return nil
	})
	testutil.Start(t, svc)
	testutil.Stop(t, svc)
	got.WaitDistinct(t, 1, 10*time.Second) // published from OnStop, confirmed before the connection closed
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "start,started,stop" {
		t.Errorf("hooks ran as %v", order)
	}
}

func TestConcurrencyOneKeepsOrder(t *testing.T) {
	key := testutil.Key(t, "ordered")
	var mu sync.Mutex
	var seen []string
	svc := newService(t, "ordered")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		seen = append(seen, idOf(m))
		mu.Unlock()
		return nil
	})
	testutil.Start(t, svc)
	ids := fmtIDs("o", 300)
	publishN(t, publisher(t), key, ids) // one after another, each confirmed
	brokertest.WaitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == len(ids) }, "all handled")
	mu.Lock()
	defer mu.Unlock()
	for i := range ids {
		if seen[i] != ids[i] {
			t.Fatalf("message %d was %s, want %s: concurrency 1 must keep order", i, seen[i], ids[i])
		}
	}
}

func TestProtoActorLogsGoToTheServiceLogger(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	svc := newService(t, "logging", hato.WithLogger(zap.New(core)))
	testutil.Start(t, svc)
	if n := logs.FilterLoggerName("protoactor").FilterMessage("actor system started").Len(); n != 1 {
		t.Errorf("protoactor's start message reached the zap logger %d times, want 1", n)
	}
}

func TestPublishWaitsThroughAnOutageAndTheBufferIsBounded(t *testing.T) {
	key := testutil.Key(t, "outage")
	proxy, viaProxy := brokertest.Proxy(t, brokerURL(t))
	got := testutil.NewCollector()
	sink := newService(t, "outage-sink")
	mustSubscribe(t, sink, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, sink)

	p := newService(t, "outage-publisher", hato.WithURL(viaProxy), hato.WithPublishBuffer(5))
	testutil.Start(t, p)
	// The broker becomes unreachable for the publisher.
	proxy.SetRefuse(true)
	proxy.CutAll()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs <- p.Publish(ctx, map[string]any{"id": fmt.Sprint("w-", i)}, key)
		}(i)
	}
	// Five are waiting; the sixth finds the buffer full at once.
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		st, err := p.Status(context.Background())
		return err == nil && !st.Connected && st.Buffered == 5
	}, "five publishes buffered while disconnected")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Publish(ctx, map[string]any{"id": "overflow"}, key); !errorsIs(err, hato.ErrBufferFull) {
		t.Fatalf("sixth publish: %v, want ErrBufferFull", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("a publish returned while the broker was unreachable: %v", err)
	default:
	}
	proxy.SetRefuse(false) // back: the five are sent after reconnecting
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("publish through the outage: %v", err)
		}
	}
	got.WaitDistinct(t, 5, 20*time.Second)
}

func TestBrokerNackComesBackAsAnError(t *testing.T) {
	key := testutil.Key(t, "full")
	conn := brokertest.Dial(t, brokerURL(t), "test-nack")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, key, "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	p := publisher(t)
	ctx := context.Background()
	if err := p.Publish(ctx, "first", key); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "second", key); !errorsIs(err, hato.ErrNacked) {
		t.Fatalf("publish into a full reject-publish queue: %v, want ErrNacked", err)
	}
}

// raceCase is one way of calling Stop while Start runs.
type raceCase struct {
	name string
	// offline points the service at an address nothing listens on, so
	// Start waits for readiness until Stop or its ctx ends it.
	offline bool
	// startTimeout bounds Start's ctx (0: 30 s).
	startTimeout time.Duration
	// trigger says when Stop is called: "go" (at once, concurrently),
	// "on-start" (from an OnStart hook), "ready" (when the connection
	// reports ready, before Start returns), "after-start" (once Start
	// returned, even with an error), "inside-on-start" (by an OnStart hook
	// itself, on Start's goroutine).
	trigger string
	// stopped: Start must return ErrStopped (Stop came before it spawned).
	stopped bool
}

var raceCases = []raceCase{
	{name: "concurrent", trigger: "go"},
	{name: "during OnStart", trigger: "on-start", stopped: true},
	{name: "by an OnStart hook", trigger: "inside-on-start", stopped: true},
	{name: "during ready wait", trigger: "ready"},
	{name: "offline, waiting for ready", offline: true, trigger: "go"},
	{name: "offline, after Start's ctx expired", offline: true, startTimeout: 20 * time.Millisecond, trigger: "after-start"},
	{name: "offline, as Start's ctx expires", offline: true, startTimeout: 20 * time.Millisecond, trigger: "go"},
	{name: "Start's ctx already expired", startTimeout: time.Nanosecond, trigger: "after-start"},
}

// TestStopWhileStartRunsNeverPanicsOrHangs calls Stop while Start runs,
// at every stage of Start, with an owned and with an embedded actor system.
func TestStopWhileStartRunsNeverPanicsOrHangs(t *testing.T) {
	for i := range 64 {
		rc := raceCases[i%len(raceCases)]
		embedded := i/len(raceCases)%2 == 1
		if !raceOnce(t, rc, embedded, i) {
			return
		}
	}
	// goleak retries for about a second; on a loaded machine the last
	// connections take longer to wind down, so poll a while longer.
	err := goleak.Find(leak.Options()...)
	for deadline := time.Now().Add(15 * time.Second); err != nil && time.Now().Before(deadline); {
		err = goleak.Find(leak.Options()...)
	}
	if err != nil {
		t.Errorf("goroutines left after Start/Stop races: %v", err)
	}
}

// raceOnce runs one Start/Stop race; false when it hung.
func raceOnce(t *testing.T, rc raceCase, embedded bool, i int) bool {
	t.Helper()
	what := fmt.Sprintf("iteration %d (%s, embedded system %v)", i, rc.name, embedded)
	url := brokerURL(t)
	if rc.offline {
		url = offlineURL
	}
	opts := testutil.Options(t, url)
	var sys *actor.ActorSystem
	if embedded {
		sys = actor.NewActorSystem(actor.WithLoggerFactory(quietActorLogs))
		opts = append(opts, hato.WithActorSystem(sys))
	}
	stopNow := make(chan struct{})
	trigger := func() {
		select {
		case <-stopNow:
		default:
			close(stopNow)
		}
	}
	if rc.trigger == "ready" {
		opts = append(opts, hato.WithSupervisorEvents(func(e hato.SupervisorEvent) {
			if e.Kind == hato.EventReady && e.Child == "connection" {
				trigger()
			}
		}))
	}
	svc, err := hato.New("race", append(opts, hato.WithDrainTimeout(2*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, "race.key", func(context.Context, *hato.Message[payload]) error { return nil })
	if rc.trigger == "on-start" {
		svc.OnStart(func(ctx context.Context) error {
			trigger()
			select { // give Stop its chance while the hook runs
			case <-ctx.Done():
			case <-svc.Done():
			case <-time.After(time.Second):
			}
			return nil
		})
	}
	if rc.trigger == "go" {
		trigger()
	}
	startErr, stopErr := make(chan error, 1), make(chan error, 1)
	stop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return svc.Stop(ctx)
	}
	if rc.trigger == "inside-on-start" {
		svc.OnStart(func(context.Context) error {
			guarded(stopErr, stop)
			return nil
		})
	} else {
		go guarded(stopErr, func() error {
			<-stopNow
			return stop()
		})
	}
	go guarded(startErr, func() error {
		timeout := rc.startTimeout
		if timeout == 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := svc.Start(ctx)
		trigger() // "after-start", and Stop at the latest now
		return err
	})
	ok := checkRace(t, what, rc.stopped, startErr, stopErr)
	if ok {
		select {
		case <-svc.Done():
		default:
			t.Errorf("%s: Done not closed after Stop returned", what)
		}
	}
	if sys != nil {
		sys.Shutdown()
	}
	return ok
}

// checkRace checks what Start and Stop returned; false when one hung.
func checkRace(t *testing.T, what string, stopped bool, startErr, stopErr <-chan error) bool {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for range 2 {
		select {
		case err := <-startErr:
			if stopped && !errors.Is(err, hato.ErrStopped) {
				t.Errorf("%s: Start = %v, want ErrStopped", what, err)
			} else if err != nil && !errors.Is(err, hato.ErrStopped) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s: Start = %v, want nil, ErrStopped or its ctx's error", what, err)
			}
		case err := <-stopErr:
			if err != nil {
				t.Errorf("%s: Stop = %v, want nil", what, err)
			}
		case <-timeout:
			t.Errorf("%s: Start or Stop still running after 30s", what)
			return false
		}
	}
	return true
}

// guarded runs fn, turning a panic into an error on out.
func guarded(out chan<- error, fn func() error) {
	defer func() {
		if v := recover(); v != nil {
			out <- fmt.Errorf("panic: %v\n%s", v, debug.Stack())
		}
	}()
	out <- fn()
}

func quietActorLogs(*actor.ActorSystem) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestStopFinishesHandlersInFlightAndReturnsTheRest(t *testing.T) {
	key := testutil.Key(t, "drain")
	first, second := testutil.NewCollector(), testutil.NewCollector()
	var started atomic.Int32
	svc := newService(t, "draining", hato.WithDrainTimeout(5*time.Second))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		started.Add(1)
		time.Sleep(200 * time.Millisecond)
		first.Add(idOf(m))
		return nil
	}, hato.Concurrency(4), hato.Prefetch(10, 0))
	testutil.Start(t, svc)

	ids := fmtIDs("d", 40)
	publishN(t, publisher(t), key, ids)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return started.Load() >= 4 }, "handlers running")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n := int(started.Load()); first.Total() != n {
		t.Errorf("%d handlers started but %d finished: Stop must let handlers in flight finish", n, first.Total())
	}

	// What the first instance did not handle is still in the queue.
	conn := brokertest.Dial(t, brokerURL(t), "test-drain-inspect")
	queue := svc.Routes()[0].Queue
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, queue)
		return n == len(ids)-first.Total()
	}, "the %d unhandled messages back in the queue", len(ids)-first.Total())

	next := newService(t, "draining")
	mustSubscribe(t, next, key, func(ctx context.Context, m *hato.Message[payload]) error {
		second.Add(idOf(m))
		return nil
	})
	testutil.Start(t, next)
	second.WaitDistinct(t, len(ids)-first.Total(), 20*time.Second)
	for _, id := range ids {
		if n := first.Count(id) + second.Count(id); n != 1 {
			t.Errorf("%s handled %d times, want exactly once across the two instances", id, n)
		}
	}
}

func TestStopAtTheDrainDeadlineReturnsUnfinishedDeliveries(t *testing.T) {
	key := testutil.Key(t, "stuck")
	var cancelled atomic.Bool
	var started atomic.Int32
	svc := newService(t, "stuck", hato.WithDrainTimeout(300*time.Millisecond))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		started.Add(1)
		<-ctx.Done() // a handler that only stops when told to
		cancelled.Store(true)
		return ctx.Err()
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"stuck-1", "stuck-2"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return started.Load() == 1 }, "handler running")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := svc.Stop(ctx)
	if !errorsIs(err, hato.ErrDrainIncomplete) {
		t.Fatalf("stop = %v, want ErrDrainIncomplete", err)
	}
	if hato.ExitCode(&hato.RunError{Code: hato.ExitStopIncomplete, Err: err}) != hato.ExitStopIncomplete {
		t.Error("exit code mapping")
	}
	brokertest.WaitFor(t, 5*time.Second, cancelled.Load, "the handler's context cancelled at the deadline")

	got := testutil.NewCollector()
	next := newService(t, "stuck")
	mustSubscribe(t, next, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, next)
	got.WaitDistinct(t, 2, 20*time.Second)
}

func TestStopIsIdempotentAndPublishAfterStopFails(t *testing.T) {
	svc := newService(t, "idempotent")
	testutil.Start(t, svc)
	ctx := context.Background()
	if err := svc.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-svc.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := svc.Publish(ctx, "x", "k"); !errorsIs(err, hato.ErrStopped) {
		t.Fatalf("publish after stop: %v, want ErrStopped", err)
	}
	if err := svc.Start(ctx); !errorsIs(err, hato.ErrAlreadyStarted) {
		t.Fatalf("start after stop: %v, want ErrAlreadyStarted", err)
	}
}

// A route held in restart backoff never sees its Drain (its mailbox is
// suspended): Stop must not wait out the drain timeout for it, and the
// publishes outstanding at Stop, from an embedding goroutine and from an
// OnStop hook, must get their outcome before the deadline expires.
func TestStopDuringARestartBackoffReturnsPromptly(t *testing.T) {
	key := testutil.Key(t, "backoff")
	ev := &testutil.SupervisorEvents{}
	svc := newService(t, "backoff", hato.WithDrainTimeout(20*time.Second), hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		panic("handler bug")
	}, hato.Supervision(hato.RestartPolicy{
		Backoff:     hato.Backoff{Initial: time.Hour, Max: time.Hour},
		MaxRestarts: 3,
		Window:      time.Hour,
	}))
	hookErr := make(chan error, 1)
	svc.OnStop(func(ctx context.Context) error {
		hookErr <- svc.Publish(ctx, map[string]any{"id": "from-on-stop"}, testutil.Key(t, "nowhere"))
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"boom"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventFailed) == 1 }, "the route in restart backoff")

	// The embedder's ctx for Stop ends with the drain timeout, like its
	// publishing goroutine's.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	loopErr := make(chan error, 1)
	go func() {
		for {
			if err := svc.Publish(ctx, map[string]any{"id": "loop"}, testutil.Key(t, "nowhere")); err != nil {
				loopErr <- err
				return
			}
		}
	}()
	stopped := make(chan error, 1)
	go func() { stopped <- svc.Stop(ctx) }()
	var stopErr error
	select {
	case stopErr = <-stopped:
	case <-time.After(10 * time.Second):
		t.Error("Stop still running after 10s of a 20s drain timeout: it waits for the route in backoff")
		stopErr = <-stopped
	}
	if stopErr != nil {
		t.Errorf("stop = %v, want nil", stopErr)
	}
	if err := <-hookErr; err != nil {
		t.Errorf("publish from OnStop = %v, want it confirmed", err)
	}
	if err := <-loopErr; !errors.Is(err, hato.ErrStopped) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("publishing goroutine ended with %v, want ErrStopped", err)
	}
}

// A route whose session ended (here: its queue was deleted, so the broker
// cancelled the consumer) has a reopen scheduled. Stopping the service
// meanwhile finishes the route's drain at once; the scheduled reopen must
// not start consuming again while the OnStop hooks run.
func TestDrainedRouteDoesNotConsumeAgain(t *testing.T) {
	key := testutil.Key(t, "drained")
	ev := &testutil.SupervisorEvents{}
	reopen := hato.Backoff{Initial: 300 * time.Millisecond, Max: 300 * time.Millisecond, Multiplier: 1}
	svc := newService(t, "drained", hato.WithReconnectBackoff(reopen), hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error { return nil })
	conn := brokertest.Dial(t, brokerURL(t), "test-drained")
	var reconsumed atomic.Bool
	svc.OnStop(func(ctx context.Context) error {
		// Well past the reopen delay: a reopen would have declared the
		// queue again and consumed from it by then.
		err := brokertest.Eventually(3*time.Second, func() bool {
			_, consumers, err := brokertest.InspectQueue(conn, svc.Routes()[0].Queue)
			return err == nil && consumers > 0
		})
		reconsumed.Store(err == nil)
		return nil
	})
	testutil.Start(t, svc)
	queue := svc.Routes()[0].Queue

	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventUnavailable) > 0 },
		"the route's session ended")
	testutil.Stop(t, svc)
	if reconsumed.Load() {
		t.Fatal("the route consumed again after its drain finished (while the OnStop hooks ran)")
	}
}

type fakeComponent struct {
	started  atomic.Pointer[hato.Service]
	stopped  atomic.Bool
	notReady atomic.Pointer[error]
}

func (c *fakeComponent) Start(_ context.Context, s *hato.Service) error {
	c.started.Store(s)
	return nil
}
func (c *fakeComponent) Stop(context.Context) error { c.stopped.Store(true); return nil }
func (c *fakeComponent) Ready() error {
	if p := c.notReady.Load(); p != nil {
		return *p
	}
	return nil
}

// A component starts with the service it runs in, makes it not ready while
// it is not, and stops with it.
func TestComponent(t *testing.T) {
	c := &fakeComponent{}
	svc := newService(t, "component", hato.WithComponent(c))
	testutil.Start(t, svc)
	if c.started.Load() != svc {
		t.Fatal("component not started with its service")
	}
	if err := svc.Ready(); err != nil {
		t.Fatalf("ready: %v", err)
	}
	down := errors.New("database unreachable")
	c.notReady.Store(&down)
	if err := svc.Ready(); !errors.Is(err, hato.ErrNotReady) || !errors.Is(err, down) {
		t.Fatalf("ready with the component down: %v", err)
	}
	if err := svc.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !c.stopped.Load() {
		t.Fatal("component not stopped")
	}
}

package hato_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/hatotest"
	"github.com/hato-go/hato/test/brokertest"
)

// The Service lifecycle (lifecycle.go) on the in-memory broker: the public
// contracts of Start, Stop, Run, Done, Failed and Err. The broker suite
// (test/integration/lifecycle_test.go) races Start and Stop against
// RabbitMQ and an unreachable broker.

func memService(t *testing.T, b *hatotest.Broker, opts ...hato.Option) *hato.Service {
	t.Helper()
	svc, err := hato.New("lifecycle", append([]hato.Option{hatotest.Transport(b), hato.WithLogger(zap.NewNop()),
		hato.WithDrainTimeout(2 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := hato.Subscribe(svc, "in", func(context.Context, *hato.Message[any]) error { return nil }); err != nil {
		t.Fatal(err)
	}
	return svc
}

func within(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkStopped checks what a stopped service answers: Done closed,
// Publish and Status ErrStopped, Ready not ready, Start refused with one
// of startErrs.
func checkStopped(t *testing.T, svc *hato.Service, startErrs ...error) {
	t.Helper()
	ctx := within(t)
	select {
	case <-svc.Done():
	default:
		t.Error("Done not closed after Stop returned")
	}
	if err := svc.Publish(ctx, "x", "in"); !errors.Is(err, hato.ErrStopped) {
		t.Errorf("Publish after Stop = %v, want ErrStopped", err)
	}
	if _, err := svc.Status(ctx); !errors.Is(err, hato.ErrStopped) {
		t.Errorf("Status after Stop = %v, want ErrStopped", err)
	}
	if err := svc.Ready(); !errors.Is(err, hato.ErrNotReady) {
		t.Errorf("Ready after Stop = %v, want ErrNotReady", err)
	}
	err := svc.Start(ctx)
	if !slices.ContainsFunc(startErrs, func(want error) bool { return errors.Is(err, want) }) {
		t.Errorf("Start after Stop = %v, want one of %v", err, startErrs)
	}
	if got := hato.LifecycleState(svc); got != "stopped" {
		t.Errorf("state %s, want stopped", got)
	}
}

func TestStopBeforeStart(t *testing.T) {
	svc := memService(t, hatotest.NewBroker())
	if err := svc.Stop(within(t)); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	checkStopped(t, svc, hato.ErrStopped)
}

// An OnStart hook may call Stop, on Start's goroutine: nothing was
// spawned, so Stop returns at once and Start returns ErrStopped.
func TestStopFromAnOnStartHook(t *testing.T) {
	svc := memService(t, hatotest.NewBroker())
	stopErr := make(chan error, 1)
	svc.OnStart(func(context.Context) error {
		stopErr <- svc.Stop(within(t))
		return nil
	})
	if err := svc.Start(within(t)); !errors.Is(err, hato.ErrStopped) {
		t.Fatalf("Start = %v, want ErrStopped", err)
	}
	if err := <-stopErr; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	checkStopped(t, svc, hato.ErrAlreadyStarted)
}

// A Stop while the OnStart hooks run ends their ctx and stops the service
// at once; Start returns ErrStopped without spawning anything.
func TestStopDuringOnStartHooksCancelsTheirContext(t *testing.T) {
	svc := memService(t, hatotest.NewBroker())
	inHook := make(chan struct{})
	svc.OnStart(func(ctx context.Context) error {
		close(inHook)
		<-ctx.Done()
		return ctx.Err()
	})
	startErr := make(chan error, 1)
	go func() { startErr <- svc.Start(within(t)) }()
	<-inHook
	if err := svc.Stop(within(t)); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if err := <-startErr; !errors.Is(err, hato.ErrStopped) {
		t.Fatalf("Start = %v, want ErrStopped", err)
	}
	if svc.ActorSystem() != nil {
		t.Error("Start spawned an actor system after Stop")
	}
	checkStopped(t, svc, hato.ErrAlreadyStarted)
}

// A Stop while Start waits for its actors to be ready cancels the start;
// Start tears down what it spawned and returns ErrStopped, and Stop
// returns once it has.
func TestStopWhileSpawningCancelsTheStart(t *testing.T) {
	var svc *hato.Service
	var once sync.Once
	stopErr := make(chan error, 1)
	cancelled := make(chan error, 1)
	hold := func(e hato.SupervisorEvent) {
		if e.Kind != hato.EventReady || e.Child != "connection" {
			return
		}
		// On the root supervisor's goroutine: Start cannot hear that every
		// child is ready before this returns.
		once.Do(func() {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				stopErr <- svc.Stop(ctx)
			}()
			cancelled <- brokertest.Eventually(5*time.Second, func() bool { return hato.LifecycleState(svc) != "spawning" })
		})
	}
	svc = memService(t, hatotest.NewBroker(), hato.WithSupervisorEvents(hold))
	if err := svc.Start(within(t)); !errors.Is(err, hato.ErrStopped) {
		t.Fatalf("Start = %v, want ErrStopped", err)
	}
	if err := <-cancelled; err != nil {
		t.Fatalf("Stop did not cancel the start: %v", err)
	}
	if err := <-stopErr; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	checkStopped(t, svc, hato.ErrAlreadyStarted)
}

// Stop and Start at once, many times: both return, Start with nil or
// ErrStopped, Stop with nil, and the service ends stopped.
func TestStopRacingStart(t *testing.T) {
	b := hatotest.NewBroker()
	for i := range 50 {
		svc := memService(t, b)
		startErr := make(chan error, 1)
		go func() { startErr <- svc.Start(within(t)) }()
		if i%2 == 1 {
			time.Sleep(time.Duration(i) * 20 * time.Microsecond) // spread Stop over Start's stages
		}
		if err := svc.Stop(within(t)); err != nil {
			t.Fatalf("iteration %d: Stop = %v", i, err)
		}
		if err := <-startErr; err != nil && !errors.Is(err, hato.ErrStopped) {
			t.Fatalf("iteration %d: Start = %v, want nil or ErrStopped", i, err)
		}
		// ErrStopped when Stop came before Start.
		checkStopped(t, svc, hato.ErrAlreadyStarted, hato.ErrStopped)
	}
}

// Stop is idempotent: concurrent and later calls wait for the first and
// return its result (here an OnStop hook's error).
func TestStopTwiceReturnsTheFirstResult(t *testing.T) {
	svc := memService(t, hatotest.NewBroker())
	hookErr := errors.New("hook failed")
	svc.OnStop(func(context.Context) error { return hookErr })
	hatotest.Start(t, svc)
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- svc.Stop(within(t)) }()
	}
	for range 4 {
		if err := <-errs; !errors.Is(err, hookErr) {
			t.Errorf("Stop = %v, want the OnStop hook's error", err)
		}
	}
	if err := svc.Stop(within(t)); !errors.Is(err, hookErr) {
		t.Errorf("a later Stop = %v, want the OnStop hook's error", err)
	}
	checkStopped(t, svc, hato.ErrAlreadyStarted)
}

// hopeless subscribes a route whose handler always panics and whose
// supervisor gives up after two restarts.
func hopeless(t *testing.T, b *hatotest.Broker, svc *hato.Service, key string) {
	t.Helper()
	err := hato.Subscribe(svc, key, func(context.Context, *hato.Message[any]) error { panic("always") },
		hato.Supervision(hato.RestartPolicy{Backoff: hato.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
			MaxRestarts: 2, Window: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
}

// Two routes give up: the service fails once (Failed closed, Err the
// first failure), stays running until stopped, and Err survives Stop.
func TestRoutesGivingUpFailTheServiceOnce(t *testing.T) {
	b := hatotest.NewBroker()
	svc := memService(t, b, hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 100}))
	hopeless(t, b, svc, "a")
	hopeless(t, b, svc, "b")
	hatotest.Start(t, svc)
	for _, key := range []string{"a", "b"} {
		if err := b.Publish(within(t), key, map[string]string{"id": key}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-svc.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not fail")
	}
	first := svc.Err()
	if !errors.Is(first, hato.ErrRouteFailed) {
		t.Fatalf("Err = %v, want ErrRouteFailed", first)
	}
	if got := hato.LifecycleState(svc); got != "failed" {
		t.Errorf("state %s, want failed", got)
	}
	if _, err := svc.Status(within(t)); err != nil {
		t.Errorf("Status of a failed service = %v, want its status", err)
	}
	if err := svc.Stop(within(t)); err != nil {
		t.Errorf("Stop = %v", err)
	}
	if !errors.Is(svc.Err(), first) {
		t.Errorf("Err after Stop = %v, want %v", svc.Err(), first)
	}
	checkStopped(t, svc, hato.ErrAlreadyStarted)
}

// An OnStarted hook's error is Start's error and a fatal failure.
func TestOnStartedHookErrorFailsTheService(t *testing.T) {
	svc := memService(t, hatotest.NewBroker())
	hookErr := errors.New("not today")
	svc.OnStarted(func(context.Context) error { return hookErr })
	if err := svc.Start(within(t)); !errors.Is(err, hookErr) {
		t.Fatalf("Start = %v, want the hook's error", err)
	}
	select {
	case <-svc.Failed():
	default:
		t.Fatal("Failed not closed")
	}
	if !errors.Is(svc.Err(), hookErr) {
		t.Errorf("Err = %v, want the hook's error", svc.Err())
	}
	if err := svc.Stop(within(t)); err != nil {
		t.Errorf("Stop = %v", err)
	}
}

// Run's exit codes: a clean stop, a start that fails, a fatal failure
// while running, a stop that does not finish cleanly.
func TestRunExitCodes(t *testing.T) {
	cases := []struct {
		name  string
		setup func(*testing.T, *hatotest.Broker, *hato.Service) context.Context
		code  int
	}{
		{"ctx ends", func(t *testing.T, _ *hatotest.Broker, svc *hato.Service) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			svc.OnStarted(func(context.Context) error { cancel(); return nil })
			return ctx
		}, hato.ExitOK},
		{"OnStart fails", func(t *testing.T, _ *hatotest.Broker, svc *hato.Service) context.Context {
			svc.OnStart(func(context.Context) error { return errors.New("no") })
			return context.Background()
		}, hato.ExitStartFailed},
		{"OnStarted fails", func(t *testing.T, _ *hatotest.Broker, svc *hato.Service) context.Context {
			svc.OnStarted(func(context.Context) error { return errors.New("no") })
			return context.Background()
		}, hato.ExitStartFailed},
		{"a route gives up", func(t *testing.T, b *hatotest.Broker, svc *hato.Service) context.Context {
			hopeless(t, b, svc, "doomed")
			svc.OnStarted(func(ctx context.Context) error { return b.Publish(ctx, "doomed", map[string]string{}) })
			return context.Background()
		}, hato.ExitFailed},
		{"OnStop fails", func(t *testing.T, _ *hatotest.Broker, svc *hato.Service) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			svc.OnStarted(func(context.Context) error { cancel(); return nil })
			svc.OnStop(func(context.Context) error { return errors.New("no") })
			return ctx
		}, hato.ExitStopIncomplete},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := hatotest.NewBroker()
			svc := memService(t, b, hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 100}))
			ctx := c.setup(t, b, svc)
			done := make(chan error, 1)
			go func() { done <- svc.Run(ctx) }()
			select {
			case err := <-done:
				if got := hato.ExitCode(err); got != c.code {
					t.Errorf("Run = %v: exit code %d, want %d", err, got, c.code)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
			select {
			case <-svc.Done():
			default:
				t.Error("Run returned before Done was closed")
			}
		})
	}
}

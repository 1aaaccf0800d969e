//go:build integration

package hato_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/leak"
)

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

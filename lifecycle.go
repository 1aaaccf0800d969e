package hato

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// state is where a Service is in its lifecycle. It only moves forward
// (the table below has no cycle), so every state is entered at most once
// and what entering one does (close Done, close Failed, cancel the start)
// happens at most once. DESIGN.md ("Shutdown") draws the machine.
type state int32

const (
	// stateNew: made by New; Subscribe and Start allowed.
	stateNew state = iota
	// stateStarting: Start runs the OnStart hooks; nothing is spawned.
	stateStarting
	// stateSpawning: Start spawns the actors and waits until they are ready.
	stateSpawning
	// stateStartCancelled: Stop came while Start was spawning; Start has
	// yet to notice and tear down.
	stateStartCancelled
	// stateAborting: Start tears down what it started (it failed, or Stop
	// cancelled it); publishing is closed.
	stateAborting
	// stateRunning: started.
	stateRunning
	// stateFailed: running after a fatal failure (Failed is closed, Err
	// says why); Run stops the service.
	stateFailed
	// stateDraining: Stop drains the routes and runs the OnStop hooks,
	// which may still publish.
	stateDraining
	// stateClosing: publishing is closed; Stop drains the connection and
	// stops the actors.
	stateClosing
	// stateStopped: stopped; Done is closed.
	stateStopped

	numStates
)

var stateNames = [numStates]string{"new", "starting", "spawning", "start-cancelled", "aborting",
	"running", "failed", "draining", "closing", "stopped"}

func (st state) String() string {
	if st < 0 || st >= numStates {
		return fmt.Sprintf("state(%d)", int32(st))
	}
	return stateNames[st]
}

// transitions is the lifecycle: transitions[from] lists the states a
// service in from may move to. Who moves (DESIGN.md has the table):
// Start: New→Starting→Spawning→Running, and Starting, Spawning or
// StartCancelled→Aborting→Stopped when it fails or was cancelled. Stop:
// New or Starting→Stopped (nothing spawned), Spawning→StartCancelled,
// Running or Failed→Draining→Closing→Stopped. fail: Running→Failed.
var transitions = [numStates][]state{
	stateNew:            {stateStarting, stateStopped},
	stateStarting:       {stateSpawning, stateAborting, stateStopped},
	stateSpawning:       {stateRunning, stateAborting, stateStartCancelled},
	stateStartCancelled: {stateAborting},
	stateAborting:       {stateStopped},
	stateRunning:        {stateFailed, stateDraining},
	stateFailed:         {stateDraining},
	stateDraining:       {stateClosing},
	stateClosing:        {stateStopped},
}

// allowed reports whether the table lets from move to to.
func allowed(from, to state) bool {
	return from >= 0 && from < numStates && slices.Contains(transitions[from], to)
}

// running: started and not stopping (a failed service still runs until
// it is stopped).
func (st state) running() bool { return st == stateRunning || st == stateFailed }

// publishingClosed: hand refuses with ErrStopped.
func (st state) publishingClosed() bool {
	return st == stateAborting || st == stateClosing || st == stateStopped
}

// current is the service's state. Only transition writes it (under s.mu);
// it is atomic so that hand can read it without s.mu.
func (s *Service) current() state { return state(s.st.Load()) }

// transition moves the service to to if it is in one of from and the
// table allows the move, and does what entering to does; it returns the
// state the service was in and whether it moved. The caller holds s.mu.
// Every change of state goes through here.
func (s *Service) transition(to state, from ...state) (state, bool) {
	cur := s.current()
	if !slices.Contains(from, cur) || !allowed(cur, to) {
		return cur, false
	}
	if to.publishingClosed() && !cur.publishingClosed() {
		// hand reads the state under s.gate shared: once this holds it
		// exclusively no request is half-handed, and every later hand
		// refuses.
		s.gate.Lock()
		s.st.Store(int32(to))
		s.gate.Unlock()
	} else {
		s.st.Store(int32(to))
	}
	switch to {
	case stateStartCancelled:
		s.cancelStart() // ends the ctx of the OnStart hooks and of awaitReady
	case stateFailed:
		close(s.failed)
	case stateStopped:
		if s.cancelStart != nil {
			s.cancelStart()
		}
		close(s.done)
	}
	return cur, true
}

// move is transition under s.mu.
func (s *Service) move(to state, from ...state) (state, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transition(to, from...)
}

// Start connects, declares every route's topology and starts consuming. It
// returns once the broker connection is up and every route consumes, or
// with an error when ctx ends first or the broker refuses something
// permanently (credentials, a conflicting queue declaration); everything
// started is stopped again then. Start may be called once. Stop may be
// called while Start runs, from another goroutine: it cancels the start
// (the ctx OnStart hooks get ends), and Start returns ErrStopped.
//
// When parent has no deadline, the start timeout (WithStartTimeout,
// default 60 s) bounds Start as it bounds Run: a service without a logger
// would otherwise wait silently for an unreachable broker. The error then
// says what the last connection attempt met. A nil parent is an error
// matching ErrInvalidArgument.
func (s *Service) Start(parent context.Context) error {
	if parent == nil {
		return fmt.Errorf("%w: Start with a nil context", ErrInvalidArgument)
	}
	if _, ok := parent.Deadline(); !ok {
		var cancel context.CancelFunc
		parent, cancel = context.WithTimeout(parent, s.cfg.startTimeout)
		defer cancel()
	}
	ctx, hooks, err := s.beginStart(parent)
	if err != nil {
		return err
	}
	defer s.cancelStart()
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			return s.abortStart(fmt.Errorf("hato: on-start hook: %w", err))
		}
	}
	if err := s.beginSpawn(ctx); err != nil {
		return s.abortStart(err)
	}
	if err := s.startOps(); err != nil {
		return s.abortStart(err)
	}
	if err := s.spawn(); err != nil {
		return s.abortStart(err)
	}
	if err := s.awaitReady(ctx); err != nil {
		return s.abortStart(err)
	}
	hooks, err = s.markRunning()
	if err != nil {
		return s.abortStart(err)
	}
	s.log.Info("service started", zap.Int("routes", len(s.routes)))
	for _, h := range hooks {
		if err := h(parent); err != nil {
			err = fmt.Errorf("hato: on-started hook: %w", err)
			s.fail(err)
			return err
		}
	}
	return nil
}

// beginStart moves a new service to starting; the returned ctx is
// cancelled by a Stop while starting, or when Start returns.
func (s *Service) beginStart(ctx context.Context) (context.Context, []Hook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st := s.current(); {
	case st == stateStopped && s.cancelStart == nil:
		return nil, nil, ErrStopped // stopped before it was started
	case st != stateNew:
		return nil, nil, ErrAlreadyStarted
	case s.regErr != nil:
		return nil, nil, s.regErr
	}
	ctx, s.cancelStart = context.WithCancel(ctx)
	s.transition(stateStarting, stateNew)
	return ctx, append([]Hook(nil), s.onStart...), nil
}

// beginSpawn lets Start spawn its actors, unless a Stop came during the
// OnStart hooks (the service is stopped then) or ctx ended.
func (s *Service) beginSpawn(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current() != stateStarting {
		return ErrStopped
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hato: start: %w", err)
	}
	s.transition(stateSpawning, stateStarting)
	return nil
}

// awaitReady waits until every child of the root supervisor is ready.
func (s *Service) awaitReady(ctx context.Context) error {
	ready := make(chan error, 1)
	s.system.Root.Send(s.root, &supervisor.AwaitReady{Done: ready})
	select {
	case err := <-ready:
		return err
	case <-ctx.Done():
		return s.startTimedOut(ctx.Err())
	}
}

// markRunning ends a successful start, unless Stop cancelled it.
func (s *Service) markRunning() ([]Hook, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.transition(stateRunning, stateSpawning); !ok {
		return nil, ErrStopped
	}
	return append([]Hook(nil), s.onStarted...), nil
}

// abortStart tears down whatever Start started and marks the service
// stopped. It returns ErrStopped when a Stop cancelled the start, else err.
func (s *Service) abortStart(err error) error {
	from, ok := s.move(stateAborting, stateStarting, stateSpawning, stateStartCancelled)
	if from == stateStartCancelled || from == stateStopped {
		err = ErrStopped
	} else {
		// The caller gets err; a stack trace of Start's internals adds
		// nothing to it.
		s.log.WithOptions(zap.AddStacktrace(zap.FatalLevel)).Error("start failed", zap.Error(err))
	}
	if !ok {
		// Stopped: a Stop during the OnStart hooks stopped the service,
		// and nothing was spawned.
		return err
	}
	s.teardown()
	s.finish(stateAborting, nil)
	return err
}

// onEvent runs on the root supervisor's goroutine.
func (s *Service) onEvent(e supervisor.Event) {
	s.trackEvent(e)
	if s.cfg.onSupervisorEvent != nil {
		s.cfg.onSupervisorEvent(e)
	}
	if e.Kind == supervisor.EventGaveUp && !s.cfg.keepRunningOnRouteFailure {
		s.fail(fmt.Errorf("%w: %s: %w", ErrRouteFailed, e.Child, e.Reason))
	}
}

// fail records a fatal runtime failure of a running service (the first
// one; Run stops the service on it). Once the service failed, or Stop
// began, there is nothing to record: it is stopping or must stop anyway.
func (s *Service) fail(err error) {
	s.mu.Lock()
	_, ok := s.transition(stateFailed, stateRunning)
	if ok {
		s.fatal = err
	}
	s.mu.Unlock()
	if ok {
		s.log.Error("fatal failure, the service must stop", zap.Error(err))
	}
}

// Failed is closed when the service hit a fatal runtime failure (see Err).
// Run stops the service then; an embedding program should call Stop.
func (s *Service) Failed() <-chan struct{} { return s.failed }

// Done is closed once the service has stopped.
func (s *Service) Done() <-chan struct{} { return s.done }

// Err returns the fatal runtime failure, if any.
func (s *Service) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fatal
}

// Stop stops the service gracefully: routes stop taking deliveries, handlers
// in flight get until the drain timeout (or ctx's deadline, if sooner) to
// finish, the rest goes back to the broker; OnStop hooks run; outstanding
// publishes are confirmed; then the connections close and the actors stop.
// It is idempotent: later calls wait for the first and return its result.
// Called while Start runs, it cancels the start and waits for Start to
// have stopped what it started.
//
// A nil ctx is an error matching ErrInvalidArgument; nothing is stopped.
func (s *Service) Stop(ctx context.Context) error {
	if ctx == nil {
		return fmt.Errorf("%w: Stop with a nil context", ErrInvalidArgument)
	}
	switch s.requestStop() {
	case stateNew, stateStarting:
		// Nothing is spawned, nor will be: stopped at once (so an OnStart
		// hook may call Stop).
		return nil
	case stateRunning, stateFailed:
		return s.stop(ctx)
	default:
		// A Start tearing down, or another Stop: wait for it.
		return s.awaitStopped(ctx)
	}
}

// requestStop moves the service as far toward stopped as Stop may from
// where it is, and returns where that was: New or Starting→Stopped,
// Spawning→StartCancelled (Start tears down), Running or
// Failed→Draining (this Stop stops it); nothing from anywhere else.
func (s *Service) requestStop() state {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from, ok := s.transition(stateStopped, stateNew, stateStarting); ok {
		return from
	}
	if from, ok := s.transition(stateStartCancelled, stateSpawning); ok {
		return from
	}
	from, _ := s.transition(stateDraining, stateRunning, stateFailed)
	return from
}

// awaitStopped waits until the service stopped and returns the result of
// the Stop that stopped it.
func (s *Service) awaitStopped(ctx context.Context) error {
	select {
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.stopErr
	case <-ctx.Done():
		if st := s.current(); st == stateStartCancelled || st == stateAborting {
			return fmt.Errorf("hato: stop: Start still running: %w", ctx.Err())
		}
		return ctx.Err()
	}
}

// stop is the Stop that moved the service to draining: it drains, runs
// the OnStop hooks, closes publishing, drains the connection and tears
// down (DESIGN.md, "Shutdown").
func (s *Service) stop(ctx context.Context) error {
	s.mu.Lock()
	hooks := append([]Hook(nil), s.onStop...)
	routeNames := make([]string, len(s.routes))
	for i, r := range s.routes {
		routeNames[i] = r.name
	}
	s.mu.Unlock()
	s.log.Info("stopping: draining routes")

	deadline := time.Now().Add(s.cfg.drainTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var errs []error
	if err := s.waitDrain(ctx, routeNames, deadline); err != nil {
		errs = append(errs, err)
	}
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			errs = append(errs, fmt.Errorf("hato: on-stop hook: %w", err))
		}
	}
	s.move(stateClosing, stateDraining)
	if err := s.waitDrain(ctx, []string{"connection"}, deadline); err != nil {
		errs = append(errs, err)
	}
	s.teardown()
	err := errors.Join(errs...)
	s.finish(stateClosing, err)
	s.log.Info("service stopped")
	return err
}

// waitDrain drains the named children. It returns an error wrapping
// ErrDrainIncomplete when one of them could not finish by the deadline.
func (s *Service) waitDrain(ctx context.Context, names []string, deadline time.Time) error {
	done := make(chan struct{})
	var mu sync.Mutex
	var unfinished []string
	s.system.Root.Send(s.root, &supervisor.DrainChildren{
		Names: names, Deadline: deadline, Done: done,
		Unfinished: func(child string, n int) {
			mu.Lock()
			unfinished = append(unfinished, fmt.Sprintf("%s: %d", child, n))
			mu.Unlock()
		},
	})
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrDrainIncomplete, ctx.Err())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(unfinished) > 0 {
		return fmt.Errorf("%w: unfinished at the deadline (returned to the broker, or unconfirmed): %v", ErrDrainIncomplete, unfinished)
	}
	return nil
}

// teardown stops the root supervisor (and so every actor), settles any
// publish that never got an outcome (publishing is closed: none comes
// after), and shuts an owned actor system down. Only the goroutine that moved the service to aborting (Start) or
// closing (Stop) calls it, so it runs once.
func (s *Service) teardown() {
	if s.watchdog != nil {
		s.watchdog.Stop()
	}
	if s.root != nil {
		if err := s.system.Root.StopFuture(s.root).Wait(); err != nil {
			s.log.Warn("stopping the root supervisor timed out", zap.Error(err))
		}
	}
	s.outstanding.Range(func(k, _ any) bool {
		k.(*broker.Request).Finish(ErrStopped)
		return true
	})
	if s.ownSystem {
		s.system.Shutdown()
	}
}

// finish stops the ops server and moves the service from aborting or
// closing to stopped, recording the result later Stops return.
func (s *Service) finish(from state, err error) {
	s.stopOps()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopErr = err
	s.transition(stateStopped, from)
}

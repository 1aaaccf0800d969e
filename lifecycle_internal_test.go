package hato

import (
	"errors"
	"testing"

	"github.com/hato-go/hato/broker"
)

// wantMoves is the lifecycle's table written out again, move by move, so
// that a change to transitions has to change this too.
var wantMoves = map[[2]state]bool{
	{stateNew, stateStarting}:            true, // Start
	{stateNew, stateStopped}:             true, // Stop before Start
	{stateStarting, stateSpawning}:       true, // Start, past its OnStart hooks
	{stateStarting, stateAborting}:       true, // an OnStart hook failed, or ctx ended
	{stateStarting, stateStopped}:        true, // Stop during the OnStart hooks
	{stateSpawning, stateRunning}:        true, // every child ready
	{stateSpawning, stateAborting}:       true, // spawn or readiness failed
	{stateSpawning, stateStartCancelled}: true, // Stop while spawning
	{stateStartCancelled, stateAborting}: true, // Start noticed the Stop
	{stateAborting, stateStopped}:        true, // Start tore down
	{stateRunning, stateFailed}:          true, // a route gave up, an OnStarted hook failed
	{stateRunning, stateDraining}:        true, // Stop
	{stateFailed, stateDraining}:         true, // Stop (Run's, after Failed)
	{stateDraining, stateClosing}:        true, // routes drained, OnStop hooks ran
	{stateClosing, stateStopped}:         true, // connection drained, actors stopped
}

// bareService is enough of a Service for transition: its channels and a
// cancelStart that counts.
func bareService(at state) (*Service, *int) {
	cancels := new(int)
	s := &Service{done: make(chan struct{}), failed: make(chan struct{})}
	s.cancelStart = func() { *cancels++ }
	s.st.Store(int32(at))
	return s, cancels
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestTransitionTable tries every move between two states: transition
// makes exactly the allowed ones, and does what entering the new state
// does (close Done, close Failed, cancel Start's ctx), and refuses the
// others leaving everything as it was.
func TestTransitionTable(t *testing.T) {
	for from := range numStates {
		for to := range numStates {
			t.Run(from.String()+"→"+to.String(), func(t *testing.T) {
				want := wantMoves[[2]state{from, to}]
				if got := allowed(from, to); got != want {
					t.Fatalf("allowed = %v, want %v", got, want)
				}
				s, cancels := bareService(from)
				s.mu.Lock()
				was, ok := s.transition(to, from)
				s.mu.Unlock()
				if was != from || ok != want {
					t.Fatalf("transition = (%v, %v), want (%v, %v)", was, ok, from, want)
				}
				now := from
				if ok {
					now = to
				}
				if s.current() != now {
					t.Errorf("state %v after the move, want %v", s.current(), now)
				}
				if got := isClosed(s.done); got != (ok && to == stateStopped) {
					t.Errorf("Done closed: %v", got)
				}
				if got := isClosed(s.failed); got != (ok && to == stateFailed) {
					t.Errorf("Failed closed: %v", got)
				}
				if got := *cancels > 0; got != (ok && (to == stateStopped || to == stateStartCancelled)) {
					t.Errorf("Start's ctx cancelled: %v", got)
				}
			})
		}
	}
}

// TestTransitionRefusesAStateNotNamed: a move the table allows is refused
// when the service is not in one of the states the caller names (the
// caller lost a race: another goroutine moved the service first).
func TestTransitionRefusesAStateNotNamed(t *testing.T) {
	for move := range wantMoves {
		from, to := move[0], move[1]
		s, _ := bareService(from)
		var others []state
		for st := range numStates {
			if st != from {
				others = append(others, st)
			}
		}
		s.mu.Lock()
		was, ok := s.transition(to, others...)
		s.mu.Unlock()
		if ok || was != from || s.current() != from {
			t.Errorf("%v→%v with from %v: (%v, %v), state %v; want refused", from, to, others, was, ok, s.current())
		}
	}
}

// TestLifecycleTableMovesOnlyForward: the table has no cycle and every
// state leads to stopped. Entering a state at most once is what lets
// transition close Done and Failed without a sync.Once.
func TestLifecycleTableMovesOnlyForward(t *testing.T) {
	const (
		unseen = iota
		open
		finished
	)
	mark := make([]int, numStates)
	var visit func(st state, path []state)
	visit = func(st state, path []state) {
		switch mark[st] {
		case open:
			t.Fatalf("cycle: %v", append(path, st))
		case finished:
			return
		}
		mark[st] = open
		for _, next := range transitions[st] {
			visit(next, append(path, st))
		}
		mark[st] = finished
	}
	for st := range numStates {
		visit(st, nil)
	}
	for st := range numStates {
		if st != stateStopped && !reaches(st, stateStopped) {
			t.Errorf("%v never reaches stopped", st)
		}
	}
	if len(transitions[stateStopped]) != 0 {
		t.Errorf("stopped moves on: %v", transitions[stateStopped])
	}
}

func reaches(from, to state) bool {
	for _, next := range transitions[from] {
		if next == to || reaches(next, to) {
			return true
		}
	}
	return false
}

// TestHandRefusesOnceTheStateClosesPublishing: hand (Publish's last step)
// returns ErrStopped in aborting, closing and stopped, and nothing else
// decides it.
func TestHandRefusesOnceTheStateClosesPublishing(t *testing.T) {
	for st := range numStates {
		s, _ := bareService(st)
		err := s.hand(&broker.Request{})
		closed := st == stateAborting || st == stateClosing || st == stateStopped
		switch {
		case closed && !errors.Is(err, ErrStopped):
			t.Errorf("%v: hand = %v, want ErrStopped", st, err)
		case !closed && !errors.Is(err, ErrNotStarted): // nothing spawned in bareService
			t.Errorf("%v: hand = %v, want ErrNotStarted", st, err)
		}
	}
}

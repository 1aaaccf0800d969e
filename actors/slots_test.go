package actors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestHandlerSlotsBoundAcrossIncarnations(t *testing.T) {
	s := newHandlerSlots(2)
	ctx := context.Background()
	noWarn := func(int, time.Duration) { t.Error("unexpected warning") }
	if !s.acquire(ctx, 1, noWarn) || !s.acquire(ctx, 1, noWarn) {
		t.Fatal("incarnation 1 could not take its two slots")
	}

	// Incarnation 2 waits until every handler of incarnation 1 returned,
	// even while a slot is free.
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		if s.acquire(ctx, 2, func(int, time.Duration) {}) {
			got.Add(1)
		}
	}()
	s.release(1)
	if ok, others, _ := s.try(ctx, 2); ok || others != 1 {
		t.Fatalf("try for incarnation 2 = %v with %d others running, want a wait for 1", ok, others)
	}
	if got.Load() != 0 {
		t.Fatal("incarnation 2 got a slot while incarnation 1 still ran a handler")
	}
	s.release(1)
	<-done
	if got.Load() != 1 {
		t.Fatal("incarnation 2 got no slot after incarnation 1's handlers returned")
	}
}

func TestHandlerSlotsGiveUpWhenTheContextEnds(t *testing.T) {
	s := newHandlerSlots(1)
	if !s.acquire(context.Background(), 1, nil) {
		t.Fatal("no slot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan bool)
	go func() { res <- s.acquire(ctx, 2, func(int, time.Duration) {}) }()
	cancel()
	if <-res {
		t.Fatal("acquire succeeded after its context ended")
	}
	if ok, _, _ := s.try(ctx, 2); ok {
		t.Fatal("try succeeded with a done context")
	}
}

func TestHandlerSlotsWarnWhileWaitingForAnEarlierIncarnation(t *testing.T) {
	old := overlapWarnAfter
	overlapWarnAfter = 10 * time.Millisecond
	defer func() { overlapWarnAfter = old }()
	s := newHandlerSlots(1)
	if !s.acquire(context.Background(), 1, nil) {
		t.Fatal("no slot")
	}
	warned := make(chan int, 100)
	done := make(chan bool)
	go func() {
		done <- s.acquire(context.Background(), 2, func(others int, _ time.Duration) { warned <- others })
	}()
	if n := <-warned; n != 1 {
		t.Fatalf("warned with %d handlers still running, want 1", n)
	}
	s.release(1)
	if !<-done {
		t.Fatal("no slot after the earlier handler returned")
	}
}

package actors

import (
	"context"
	"sync"
	"time"
)

// overlapWarnAfter is how long a worker waits for the handlers of an
// earlier incarnation before it warns, and again after each further period.
var overlapWarnAfter = 5 * time.Second

// handlerSlots bounds the running handlers of one route across its consumer
// actor's incarnations: at most limit at once, and an incarnation starts
// none while a handler of an earlier incarnation still runs (one that
// ignores its cancelled context). It outlives the incarnations, like
// RouteState, so a restart never runs the redelivered message beside the
// handler still holding its first delivery.
type handlerSlots struct {
	mu      sync.Mutex
	limit   int
	running map[uint64]int // handlers running, by incarnation
	total   int
	// changed is closed when a handler returns; made only when someone
	// waits (nil otherwise), so a release with no waiter allocates nothing.
	changed chan struct{}
}

func newHandlerSlots(limit int) *handlerSlots {
	return &handlerSlots{limit: limit, running: map[uint64]int{}}
}

// acquire waits for a slot for a handler of incarnation inc. It returns
// false, holding nothing, once ctx is done. While it waits for handlers of
// other incarnations it calls warn every overlapWarnAfter with how many
// still run and how long it has waited.
func (s *handlerSlots) acquire(ctx context.Context, inc uint64, warn func(others int, waited time.Duration)) bool {
	var tick <-chan time.Time
	start := time.Now()
	for {
		ok, others, changed := s.try(ctx, inc)
		if ok {
			return true
		}
		if changed == nil {
			return false
		}
		if tick == nil {
			t := time.NewTicker(overlapWarnAfter)
			defer t.Stop()
			tick = t.C
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-tick:
			if others > 0 {
				warn(others, time.Since(start))
			}
		}
	}
}

// try takes a slot if one is free and no other incarnation's handler runs;
// otherwise it reports how many of those run and what to wait on (nil once
// ctx is done).
func (s *handlerSlots) try(ctx context.Context, inc uint64) (ok bool, others int, changed chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return false, 0, nil
	}
	mine := s.running[inc]
	if s.total < s.limit && s.total == mine {
		s.running[inc]++
		s.total++
		return true, 0, nil
	}
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return false, s.total - mine, s.changed
}

// release frees a slot of incarnation inc.
func (s *handlerSlots) release(inc uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[inc]--; s.running[inc] <= 0 {
		delete(s.running, inc)
	}
	s.total--
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

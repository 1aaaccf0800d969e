//go:build integration

package hato_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// outageRun is what an outage scenario measured.
type outageRun struct {
	deadLettered int           // messages in the dead-letter queue at the end
	dlqDuring    []int         // the dead-letter queue's depth, once a second from the first publish
	missing      []string      // neither forwarded nor dead-lettered
	left         int           // messages left in the route's queue
	pauses       int           // EventPaused
	doneAfter    time.Duration // from the end of the outage until every message was forwarded or dead-lettered
}

// runOutage is the forwarder of examples/amqp-example under an outage:
// 300 messages arrive at 50 msg/s and the handler fails everything for
// 10 s from the first one. It waits until every message was forwarded or
// dead-lettered, at most 90 s after the outage's end, and reports.
func runOutage(t *testing.T, opts ...hato.RouteOption) outageRun {
	in, out := testutil.Key(t, "in"), testutil.Key(t, "out")
	events := &testutil.SupervisorEvents{}
	var mu sync.Mutex
	idOf := map[string]string{} // message uuid → payload id, for the dead-letter events
	dead := map[string]bool{}
	fwd := newService(t, "forwarder", hato.WithSupervisorEvents(events.Add), hato.WithDeliveryEvents(func(e hato.DeliveryEvent) {
		if e.Action == hato.ActionDeadLetter {
			mu.Lock()
			dead[e.MessageID] = true
			mu.Unlock()
		}
	}))
	var outageEnd time.Time
	mustSubscribe(t, fwd, in, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		idOf[m.Metadata.MessageUUID] = m.Data.ID
		end := outageEnd
		mu.Unlock()
		if time.Now().Before(end) {
			return errors.New("dependency down")
		}
		return fwd.Publish(ctx, m.Data, out)
	}, opts...)
	got := testutil.NewCollector()
	sink := newService(t, "sink")
	mustSubscribe(t, sink, out, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(m.Data.ID)
		return nil
	})
	testutil.Start(t, fwd)
	testutil.Start(t, sink)
	p := publisher(t)
	conn := brokertest.Dial(t, brokerURL(t), "test-outage-inspect")
	route := fwd.Routes()[0]

	ids := fmtIDs("o", 300)
	mu.Lock()
	outageEnd = time.Now().Add(10 * time.Second)
	mu.Unlock()
	pubDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond) // 50 msg/s
		defer tick.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, id := range ids {
			<-tick.C
			if err := p.Publish(ctx, payload{ID: id}, in); err != nil {
				pubDone <- fmt.Errorf("publish %s: %w", id, err)
				return
			}
		}
		pubDone <- nil
	}()
	var run outageRun
	settled := func() bool {
		mu.Lock()
		n := len(dead)
		mu.Unlock()
		return got.Distinct()+n >= len(ids)
	}
	deadline := outageEnd.Add(90 * time.Second)
	for !settled() && time.Now().Before(deadline) {
		d, _ := brokertest.Inspect(t, conn, route.DeadLetterQueue)
		run.dlqDuring = append(run.dlqDuring, d)
		time.Sleep(time.Second)
	}
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, time.Until(deadline)+time.Second, settled, "every message forwarded or dead-lettered")
	run.doneAfter = time.Since(outageEnd)
	run.deadLettered, _ = brokertest.Inspect(t, conn, route.DeadLetterQueue)
	run.left, _ = brokertest.Inspect(t, conn, route.Queue)
	mu.Lock()
	deadIDs := map[string]bool{}
	for uuid := range dead {
		deadIDs[idOf[uuid]] = true
	}
	mu.Unlock()
	for _, id := range got.Missing(ids) {
		if !deadIDs[id] {
			run.missing = append(run.missing, id)
		}
	}
	run.pauses = events.Count(hato.EventPaused)
	return run
}

func (r outageRun) String() string {
	parts := make([]string, len(r.dlqDuring))
	for i, n := range r.dlqDuring {
		parts[i] = fmt.Sprint(n)
	}
	return fmt.Sprintf("dead-lettered %d, left in queue %d, lost %d, pauses %d, all settled %s after the outage; dead-letter queue depth each second: %s",
		r.deadLettered, r.left, len(r.missing), r.pauses, r.doneAfter.Round(100*time.Millisecond), strings.Join(parts, " "))
}

// TestBreakerOutageCheck is issue 20's check: with Breaker(BreakerPolicy{})
// the forwarder loses nothing to a 10 s outage and dead-letters at most 30
// messages; without it (measured for comparison) the in-process retries
// dead-letter whatever they meet during the outage.
func TestBreakerOutageCheck(t *testing.T) {
	t.Run("breaker", func(t *testing.T) {
		r := runOutage(t, hato.Breaker(hato.BreakerPolicy{}))
		t.Logf("with the breaker: %s", r)
		if r.deadLettered > 30 {
			t.Errorf("%d dead-lettered, want at most 30", r.deadLettered)
		}
		if len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d lost (%v), %d left in the queue", len(r.missing), r.missing[:min(5, len(r.missing))], r.left)
		}
		if r.pauses == 0 {
			t.Error("the route never paused")
		}
	})
	t.Run("without", func(t *testing.T) {
		r := runOutage(t)
		t.Logf("without the breaker: %s", r)
		if len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d lost, %d left in the queue", len(r.missing), r.left)
		}
	})
	// With Concurrency(1) a retrying message holds the route's only slot,
	// which slows the flood; with ten slots the retries meet ten times as
	// many messages.
	t.Run("without, concurrency 10", func(t *testing.T) {
		r := runOutage(t, hato.Concurrency(10))
		t.Logf("without the breaker, Concurrency(10): %s", r)
	})
	t.Run("breaker, concurrency 10", func(t *testing.T) {
		r := runOutage(t, hato.Concurrency(10), hato.Breaker(hato.BreakerPolicy{}))
		t.Logf("with the breaker, Concurrency(10): %s", r)
		if r.deadLettered > 30 || len(r.missing) > 0 || r.left > 0 {
			t.Errorf("%d dead-lettered (want at most 30), %d lost, %d left in the queue", r.deadLettered, len(r.missing), r.left)
		}
	})
}

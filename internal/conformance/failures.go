package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
)

// fast is a failure policy whose retries do not make tests slow.
func fast(p hato.FailurePolicy) hato.Option {
	p.Backoff = hato.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}
	return hato.FailureHandling(p)
}

// deadLetter checks one dead-lettered message: its attempts header and
// that its reason contains reason.
func deadLetter(t *testing.T, s *suite, svc *hato.Service, attempts int64, reason string) {
	t.Helper()
	dlq := svc.Routes()[0].DeadLetterQueue
	msgs := s.env.DeadLetters(t, dlq, 1)
	if len(msgs) != 1 {
		t.Fatalf("dead-letter queue %s holds %d messages, want 1", dlq, len(msgs))
	}
	h := msgs[0].Headers
	if got, ok := h["x-hato-attempts"].(int64); !ok || got != attempts {
		t.Errorf("x-hato-attempts = %v (%T), want %d", h["x-hato-attempts"], h["x-hato-attempts"], attempts)
	}
	if got, _ := h["x-hato-reason"].(string); !strings.Contains(got, reason) {
		t.Errorf("x-hato-reason = %q, want it to contain %q", got, reason)
	}
}

// retries: a failing handler runs MaxAttempts times, then the message is
// dead-lettered with why.
func retries(t *testing.T, s *suite) {
	var calls atomic.Int32
	svc := s.service(t, "conf-retry", fast(hato.FailurePolicy{MaxAttempts: 3}))
	subscribe(t, svc, "retry", func(context.Context, *hato.Message[item]) error {
		calls.Add(1)
		return errors.New("boom")
	})
	start(t, svc)
	publish(t, s.publisher(t), "retry", item{ID: "r"})
	deadLetter(t, s, svc, 3, "boom")
	if n := calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

// requeues: a message the handler requeues comes back redelivered, until
// it was requeued more than MaxRedeliveries times; then it is
// dead-lettered.
func requeues(t *testing.T, s *suite) {
	rec := newRecord()
	svc := s.service(t, "conf-requeue", fast(hato.FailurePolicy{MaxRedeliveries: 2}))
	subscribe(t, svc, "requeue", func(_ context.Context, m *hato.Message[item]) error {
		rec.add("calls", fmt.Sprint(m.Redelivered))
		return hato.Requeue(errors.New("not yet"))
	})
	start(t, svc)
	publish(t, s.publisher(t), "requeue", item{ID: "q"})
	deadLetter(t, s, svc, 1, "not yet")
	if got := rec.get("calls"); strings.Join(got, " ") != "false true true" {
		t.Errorf("handler saw redelivered = %v, want [false true true]", got)
	}
}

// decodeError: a body the route's envelope cannot decode is dead-lettered
// at once; the handler never runs.
func decodeError(t *testing.T, s *suite) {
	var calls atomic.Int32
	svc := s.service(t, "conf-decode")
	subscribe(t, svc, "decode", func(context.Context, *hato.Message[item]) error {
		calls.Add(1)
		return nil
	})
	start(t, svc)
	publish(t, s.publisher(t), "decode", []byte("{not json"), hato.Envelope(envelope.Raw))
	deadLetter(t, s, svc, 1, "undecodable")
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times, want 0", n)
	}
}

// panicRestart: a handler panic restarts the route's actor; the message
// comes back redelivered and is handled after the restart.
func panicRestart(t *testing.T, s *suite) {
	rec := newRecord()
	var events atomic.Int32
	svc := s.service(t, "conf-panic",
		hato.Supervision(hato.RestartPolicy{Backoff: hato.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond}}),
		hato.WithSupervisorEvents(func(e hato.SupervisorEvent) {
			if e.Kind == hato.EventRestarted {
				events.Add(1)
			}
		}))
	subscribe(t, svc, "panic", func(_ context.Context, m *hato.Message[item]) error {
		rec.add("calls", fmt.Sprint(m.Redelivered))
		if !m.Redelivered {
			panic("first delivery")
		}
		rec.add("handled", m.Data.ID)
		return nil
	})
	start(t, svc)
	publish(t, s.publisher(t), "panic", item{ID: "p"})
	waitFor(t, "the message to be handled after the restart", func() bool { return rec.count("handled") > 0 })
	if got := rec.get("calls"); strings.Join(got, " ") != "false true" {
		t.Errorf("handler saw redelivered = %v, want [false true]", got)
	}
	waitFor(t, "a restart event", func() bool { return events.Load() > 0 })
}

// publishFromHandler: what a handler publishes reaches the routes bound
// to it, built by the publishing service's envelope.
func publishFromHandler(t *testing.T, s *suite) {
	rec := newRecord()
	svc := s.service(t, "conf-forward")
	subscribe(t, svc, "fwd.in", func(ctx context.Context, m *hato.Message[item]) error {
		return svc.Publish(ctx, item{ID: m.Data.ID + "-out"}, "fwd.out")
	})
	subscribe(t, svc, "fwd.out", func(_ context.Context, m *hato.Message[item]) error {
		rec.add("out", m.Data.ID+" from "+m.Service.Name+" topic "+m.Metadata.Topic)
		return nil
	})
	start(t, svc)
	publish(t, s.publisher(t), "fwd.in", item{ID: "f"})
	waitFor(t, "the forwarded message", func() bool { return rec.count("out") > 0 })
	if got := rec.get("out"); len(got) != 1 || got[0] != "f-out from conf-forward topic fwd.out" {
		t.Errorf("forwarded: %v", got)
	}
}

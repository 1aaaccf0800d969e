//go:build integration

package hato_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

type ctxKey struct{}

func TestMiddlewareOrderValuesSkipAndErrors(t *testing.T) {
	key := testutil.Key(t, "mw")
	var mu sync.Mutex
	var trace []string
	record := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	outer := func(next hato.HandlerFunc) hato.HandlerFunc {
		return func(ctx context.Context, m *hato.Message[any]) error {
			record("outer-before")
			err := next(context.WithValue(ctx, ctxKey{}, "from-outer"), m)
			record("outer-after")
			return err
		}
	}
	inner := func(next hato.HandlerFunc) hato.HandlerFunc {
		return func(ctx context.Context, m *hato.Message[any]) error {
			p := m.Data.(payload) // middleware sees the decoded, typed payload
			if p.ID == "skip" {
				record("inner-skip")
				return nil
			}
			record("inner-before")
			err := next(ctx, m)
			if errors.Is(err, errHandled) {
				record("inner-handled-error")
				return nil
			}
			return err
		}
	}
	got := testutil.NewCollector()
	svc := newService(t, "mw", hato.WithMiddleware(outer, inner))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		record("handler:" + m.Data.ID + ":" + ctx.Value(ctxKey{}).(string))
		got.Add(m.Data.ID)
		if m.Data.ID == "fails" {
			return errHandled
		}
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)
	publishN(t, p, key, []string{"a"})
	got.WaitDistinct(t, 1, 10*time.Second)
	publishN(t, p, key, []string{"skip", "fails"})
	got.WaitDistinct(t, 2, 10*time.Second)

	conn := brokertest.Dial(t, brokerURL(t), "test-mw")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		mu.Lock()
		defer mu.Unlock()
		return n == 0 && len(trace) == 12
	}, "all three messages handled and acked")
	want := []string{
		"outer-before", "inner-before", "handler:a:from-outer", "outer-after",
		"outer-before", "inner-skip", "outer-after",
		"outer-before", "inner-before", "handler:fails:from-outer", "inner-handled-error", "outer-after",
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if trace[i] != want[i] {
			t.Fatalf("trace:\n got %v\nwant %v", trace, want)
		}
	}
	if got.Count("fails") != 1 {
		t.Errorf("an error the middleware handled must not be retried: handled %d times", got.Count("fails"))
	}
}

var errHandled = errors.New("handled by middleware")

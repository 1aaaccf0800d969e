package hato_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/hatotest"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/internal/transport"
	"github.com/hato-go/hato/test/brokertest"
)

// memSessions starts in-memory sessions whose end the route may never
// hear of (muted), to break them behind its back.
type memSessions struct {
	b        *hatotest.Broker
	mu       sync.Mutex
	last     transport.Session
	mute     *atomic.Bool
	breakAll atomic.Bool
}

func (m *memSessions) start(ch *amqp.Channel, cfg broker.SessionConfig) (transport.Session, amqp.Queue, error) {
	mute := &atomic.Bool{}
	closed := cfg.Closed
	cfg.Closed = func(err error) {
		if !mute.Load() {
			closed(err)
		}
	}
	s, q, err := transport.Memory(m.b).StartSession(ch, cfg)
	if err != nil {
		return nil, q, err
	}
	m.mu.Lock()
	m.last, m.mute = s, mute
	m.mu.Unlock()
	if m.breakAll.Load() {
		mute.Store(true)
		s.Close()
	}
	return s, q, nil
}

// breakLast ends the last session without the route hearing of it.
func (m *memSessions) breakLast() {
	m.mu.Lock()
	s, mute := m.last, m.mute
	m.mu.Unlock()
	mute.Store(true)
	s.Close()
}

// On the in-memory broker too, a session that ended unseen is found by
// the watchdog: EventUnavailable wrapping ErrRouteStalled, Ready naming
// the route, Healthy failing while it stays stuck, and the route consuming
// again once sessions work.
func TestLivenessInMemorySessionEndedUnseen(t *testing.T) {
	b := hatotest.NewBroker()
	ms := &memSessions{b: b}
	var stalls atomic.Int32
	var route atomic.Value
	svc, err := hato.New("liveness-mem", hatotest.Transport(b), hato.WithLogger(testutil.Logger(t)),
		hato.WithSessionStarter(ms.start),
		hato.WithLivenessInterval(50*time.Millisecond), hato.WithStallAfter(100*time.Millisecond),
		hato.WithUnhealthyAfter(300*time.Millisecond),
		hato.WithSupervisorEvents(func(e hato.SupervisorEvent) {
			if e.Kind == hato.EventUnavailable && errors.Is(e.Reason, hato.ErrRouteStalled) && e.Child == route.Load() {
				stalls.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	got := testutil.NewCollector()
	mustSubscribe(t, svc, "k", func(_ context.Context, m *hato.Message[struct{ ID string }]) error {
		got.Add(m.Data.ID)
		return nil
	})
	route.Store(svc.Routes()[0].Name)
	hatotest.Start(t, svc)
	ctx := context.Background()

	ms.breakAll.Store(true)
	ms.breakLast()
	brokertest.WaitFor(t, 10*time.Second, func() bool { return stalls.Load() > 0 }, "an EventUnavailable wrapping ErrRouteStalled")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		err := svc.Ready()
		return errors.Is(err, hato.ErrRouteStalled) && strings.Contains(err.Error(), svc.Routes()[0].Name)
	}, "Ready naming the stuck route")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return errors.Is(svc.Healthy(), hato.ErrRouteStalled) },
		"Healthy failing on the stuck route")

	ms.breakAll.Store(false)
	if err := b.Publish(ctx, "k", struct{ ID string }{"after"}); err != nil {
		t.Fatal(err)
	}
	got.WaitDistinct(t, 1, 10*time.Second)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return svc.Ready() == nil && svc.Healthy() == nil },
		"ready and healthy again")
}

//go:build integration

package hato_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/internal/transport"
	"github.com/hato-go/hato/test/brokertest"
)

// Liveness settings for tests: quick looks, so a stuck route is seen in
// about a second.
func livenessOptions() []hato.Option {
	return []hato.Option{
		hato.WithLivenessInterval(100 * time.Millisecond),
		hato.WithStallAfter(300 * time.Millisecond),
		hato.WithUnhealthyAfter(time.Second),
		hato.WithOpsServer("127.0.0.1:0"),
	}
}

// sessions wraps broker.StartSession to break sessions behind the
// route's back: a muted session never reports its end to the actor.
type sessions struct {
	mu       sync.Mutex
	list     []*testSession
	breakAll atomic.Bool // close every new session at once, muted
}

type testSession struct {
	*broker.Session
	ch   *amqp.Channel
	tag  string
	mute atomic.Bool
}

// lose, when set, loses every delivery of the sessions started while it
// is set before it reaches the route (a lost handover, as a defect between
// the session and the actor would lose it).
var lose atomic.Bool

func (ss *sessions) start(ch *amqp.Channel, cfg broker.SessionConfig) (transport.Session, amqp.Queue, error) {
	s := &testSession{ch: ch, tag: "test-" + broker.RandomID()}
	cfg.Tag = s.tag
	if lose.Load() {
		cfg.Deliver = func(*broker.Delivery) {}
	}
	closed := cfg.Closed
	cfg.Closed = func(err error) {
		if !s.mute.Load() {
			closed(err)
		}
	}
	c, q, err := broker.StartSession(ch, cfg)
	if err != nil {
		return nil, q, err
	}
	s.Session = c
	ss.mu.Lock()
	ss.list = append(ss.list, s)
	ss.mu.Unlock()
	if ss.breakAll.Load() {
		s.mute.Store(true)
		_ = ch.Close()
	}
	return c, q, nil
}

func (ss *sessions) last() *testSession {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.list[len(ss.list)-1]
}

func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.list)
}

// events collects supervisor events.
type events struct {
	mu   sync.Mutex
	list []hato.SupervisorEvent
}

func (e *events) add(ev hato.SupervisorEvent) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

// unavailable counts the route's EventUnavailable events whose reason
// wraps target.
func (e *events) unavailable(route string, target error) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.list {
		if ev.Kind == hato.EventUnavailable && ev.Child == route && errors.Is(ev.Reason, target) {
			n++
		}
	}
	return n
}

func opsGet(t *testing.T, svc *hato.Service, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + svc.OpsAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitProbe waits until path answers code with a body containing every
// one of want.
func waitProbe(t *testing.T, svc *hato.Service, path string, code int, want ...string) {
	t.Helper()
	var got int
	var body string
	brokertest.WaitFor(t, 15*time.Second, func() bool {
		got, body = opsGet(t, svc, path)
		if got != code {
			return false
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	}, "%s answering %d with %q (last: %d %s)", path, code, want, got, body)
}

// A session whose channel died without the route hearing of it (the
// window of every lifecycle defect): the watchdog sees the closed channel,
// the route reports EventUnavailable with ErrRouteStalled, counts it,
// /readyz names it, /healthz fails while it stays stuck, and the route
// consumes again once a new channel works.
func TestLivenessRouteWhoseSessionDiedUnseen(t *testing.T) {
	key := testutil.Key(t, "unseen")
	ss := &sessions{}
	ev := &events{}
	got := testutil.NewCollector()
	svc := newService(t, "liveness-unseen", append(livenessOptions(),
		hato.WithSessionStarter(ss.start), hato.WithSupervisorEvents(ev.add))...)
	mustSubscribe(t, svc, key, func(_ context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	route := svc.Routes()[0].Name
	p := publisher(t)
	publishN(t, p, key, []string{"before"})
	got.WaitDistinct(t, 1, 10*time.Second)

	// Break the session, and every one the route opens, behind its back.
	ss.breakAll.Store(true)
	s := ss.last()
	s.mute.Store(true)
	_ = s.ch.Close()

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.unavailable(route, hato.ErrRouteStalled) > 0 },
		"an EventUnavailable of %s wrapping ErrRouteStalled", route)
	waitProbe(t, svc, "/readyz", http.StatusServiceUnavailable, route, "stalled", "channel is closed")
	waitProbe(t, svc, "/metrics", http.StatusOK, `hato_route_stalls_total{`, `reason="stalled"`)
	waitProbe(t, svc, "/healthz", http.StatusServiceUnavailable, route, "stalled")

	// The channel works again: the route consumes, and says so.
	ss.breakAll.Store(false)
	publishN(t, p, key, []string{"after"})
	got.WaitDistinct(t, 2, 15*time.Second)
	waitProbe(t, svc, "/readyz", http.StatusOK)
	waitProbe(t, svc, "/healthz", http.StatusOK)
}

// A consumer the broker no longer knows while its channel lives (here
// cancelled behind the route's back): only the broker sees it. The
// watchdog's passive declare finds the queue without a consumer and
// messages ready; the route reopens and gets them.
func TestLivenessConsumerGoneWhileChannelLives(t *testing.T) {
	key := testutil.Key(t, "gone")
	ss := &sessions{}
	ev := &events{}
	got := testutil.NewCollector()
	svc := newService(t, "liveness-gone", append(livenessOptions(),
		hato.WithSessionStarter(ss.start), hato.WithSupervisorEvents(ev.add))...)
	mustSubscribe(t, svc, key, func(_ context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	route := svc.Routes()[0].Name
	s := ss.last()
	if err := s.ch.Cancel(s.tag, false); err != nil {
		t.Fatal(err)
	}
	p := publisher(t)
	publishN(t, p, key, []string{"1", "2", "3"})

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.unavailable(route, hato.ErrRouteStalled) > 0 },
		"an EventUnavailable of %s wrapping ErrRouteStalled", route)
	got.WaitDistinct(t, 3, 15*time.Second)
	if n := ss.count(); n < 2 {
		t.Errorf("%d sessions, want a new one after the stall", n)
	}
	// The stalled session's own end, reported after the verdict, is
	// stale: it must not count as a second loss.
	if n := ev.unavailable(route, broker.ErrClosed); n != 0 {
		t.Errorf("%d EventUnavailable wrapping ErrClosed after the stall, want 0", n)
	}
	waitProbe(t, svc, "/readyz", http.StatusOK)
}

// A route whose dead-letter copies the broker refuses (its user may not
// write to the default exchange) holds the message and retries: it says
// so once (one EventUnavailable wrapping ErrDeadLetterFailing, one error
// log, /readyz naming the route) instead of an error log on every retry,
// and is ready again once dead-lettering works.
func TestLivenessDeadLetteringRefused(t *testing.T) {
	vhost := brokerVhost(t)
	user, pass := "hato-nodl-"+broker.RandomID()[:8], "nodl-"+broker.RandomID()[:8]
	ctl(t, "add_user", user, pass)
	t.Cleanup(func() { _, _ = brokertest.Rabbitmqctl("delete_user", user) })
	ctl(t, "set_permissions", "-p", vhost, user, ".*", `^(?!amq\.default$).*`, ".*")
	u, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Username, u.Password = user, pass

	key := testutil.Key(t, "nodl")
	ev := &events{}
	core, logs := observer.New(zapcore.DebugLevel)
	svc, err := hato.New("liveness-nodl", append(testutil.Options(t, u.String()), append(livenessOptions(),
		hato.WithSupervisorEvents(ev.add), hato.WithLogger(zap.New(core)))...)...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, key, func(context.Context, *hato.Message[payload]) error {
		return hato.DeadLetter(errors.New("refused on purpose"))
	})
	testutil.Start(t, svc)
	route, dlq := svc.Routes()[0].Name, svc.Routes()[0].DeadLetterQueue
	publishN(t, publisher(t), key, []string{"poison"})

	failed := func(lvl zapcore.Level) int {
		return logs.Filter(func(e observer.LoggedEntry) bool {
			return e.Level == lvl && strings.Contains(e.Message, "dead-lettering failed")
		}).Len()
	}
	brokertest.WaitFor(t, 15*time.Second, func() bool { return failed(zapcore.DebugLevel)+failed(zapcore.ErrorLevel) >= 4 },
		"three retries of the refused dead-letter copy")
	if n := failed(zapcore.ErrorLevel); n != 1 {
		t.Errorf("%d error logs for the refused copy, want 1", n)
	}
	if n := ev.unavailable(route, hato.ErrDeadLetterFailing); n != 1 {
		t.Errorf("%d EventUnavailable wrapping ErrDeadLetterFailing, want 1", n)
	}
	waitProbe(t, svc, "/readyz", http.StatusServiceUnavailable, route, "dead-lettering failing")
	waitProbe(t, svc, "/metrics", http.StatusOK, `reason="dead_letter_failing"`)

	// Granted: the held copy goes through and the route is ready again.
	ctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	waitProbe(t, svc, "/readyz", http.StatusOK)
	conn := brokertest.Dial(t, brokerURL(t), "test-nodl-inspect")
	defer conn.Close()
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _, err := brokertest.InspectQueue(conn, dlq)
		return err == nil && n == 1
	}, "the message in %s", dlq)
}

func ctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := brokertest.Rabbitmqctl(args...); err != nil {
		t.Fatalf("rabbitmqctl %v: %v: %s", args, err, out)
	}
}

// Deliveries lost between the session and the route: the broker counts
// them unacked, the route holds nothing, and messages wait ready in the
// queue while its consumer lives. The watchdog's passive declare finds
// them; the reopened route gets every message.
func TestLivenessReadyMessagesNeverDelivered(t *testing.T) {
	key := testutil.Key(t, "lost")
	ss := &sessions{}
	ev := &events{}
	got := testutil.NewCollector()
	svc := newService(t, "liveness-lost", append(livenessOptions(), hato.Prefetch(2, 0),
		hato.WithSessionStarter(ss.start), hato.WithSupervisorEvents(ev.add))...)
	mustSubscribe(t, svc, key, func(_ context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	lose.Store(true)
	t.Cleanup(func() { lose.Store(false) })
	testutil.Start(t, svc)
	lose.Store(false) // the next session works
	route := svc.Routes()[0].Name
	publishN(t, publisher(t), key, fmtIDs("m", 5))

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.unavailable(route, hato.ErrRouteStalled) > 0 },
		"an EventUnavailable of %s wrapping ErrRouteStalled", route)
	if r := ev.reasons(route); !strings.Contains(r, "messages ready") {
		t.Errorf("route unavailable for %q, want messages ready and none delivered", r)
	}
	got.WaitDistinct(t, 5, 15*time.Second)
	waitProbe(t, svc, "/readyz", http.StatusOK)
}

// reasons joins the reasons of the route's events.
func (e *events) reasons(route string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.list {
		if ev.Child == route && ev.Reason != nil {
			out = append(out, ev.Reason.Error())
		}
	}
	return strings.Join(out, "; ")
}

// brokerURL is the AMQP URL of this package's vhost; it fails the test if
// the broker is unavailable. (The broker scenarios live in
// test/integration; these liveness tests stay here because they need
// export_test.go's WithSessionStarter.)
func brokerURL(t testing.TB) string {
	t.Helper()
	return pkgVhost.URL(t)
}

// brokerVhost is the name of this package's vhost (see brokerURL).
func brokerVhost(t testing.TB) string {
	t.Helper()
	return pkgVhost.Name(t)
}

// newService makes a service on this package's vhost with test options.
func newService(t *testing.T, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	svc, err := hato.New(name, append(testutil.Options(t, brokerURL(t)), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

type payload struct {
	ID string `json:"id"`
}

func idOf(m *hato.Message[payload]) string { return m.Data.ID }

// publisher starts a service without routes, for publishing in tests.
func publisher(t *testing.T, opts ...hato.Option) *hato.Service {
	t.Helper()
	p := newService(t, "test-publisher", opts...)
	testutil.Start(t, p)
	return p
}

func publishN(t *testing.T, p *hato.Service, key string, ids []string, opts ...hato.PublishOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range ids {
		if err := p.Publish(ctx, map[string]any{"id": id}, key, opts...); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
}

func fmtIDs(prefix string, n int) []string { return testutil.IDs(prefix, n) }

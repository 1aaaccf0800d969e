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

// startWatched starts a service named name with liveness options, its
// sessions started through ss and its events recorded, and a route on key
// that collects the ids it handles; it returns the route's name.
func startWatched(t *testing.T, name, key string, opts ...hato.Option) (*hato.Service, *sessions, *testutil.SupervisorEvents, *testutil.Collector, string) {
	t.Helper()
	ss, ev, got := &sessions{}, &testutil.SupervisorEvents{}, testutil.NewCollector()
	svc := newService(t, name, append(append(livenessOptions(), opts...),
		hato.WithSessionStarter(ss.start), hato.WithSupervisorEvents(ev.Add))...)
	mustSubscribe(t, svc, key, func(_ context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	return svc, ss, ev, got, svc.Routes()[0].Name
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
	svc, ss, ev, got, route := startWatched(t, "liveness-unseen", key)
	p := publisher(t)
	publishN(t, p, key, []string{"before"})
	got.WaitDistinct(t, 1, 10*time.Second)

	// Break the session, and every one the route opens, behind its back.
	ss.breakAll.Store(true)
	s := ss.last()
	s.mute.Store(true)
	_ = s.ch.Close()

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Unavailable(route, hato.ErrRouteStalled) > 0 },
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
	svc, ss, ev, got, route := startWatched(t, "liveness-gone", key)
	s := ss.last()
	if err := s.ch.Cancel(s.tag, false); err != nil {
		t.Fatal(err)
	}
	p := publisher(t)
	publishN(t, p, key, []string{"1", "2", "3"})

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Unavailable(route, hato.ErrRouteStalled) > 0 },
		"an EventUnavailable of %s wrapping ErrRouteStalled", route)
	got.WaitDistinct(t, 3, 15*time.Second)
	if n := ss.count(); n < 2 {
		t.Errorf("%d sessions, want a new one after the stall", n)
	}
	// The stalled session's own end, reported after the verdict, is
	// stale: it must not count as a second loss.
	if n := ev.Unavailable(route, broker.ErrClosed); n != 0 {
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
	vhost := pkgVhost.Name(t)
	user, pass := "hato-nodl-"+broker.RandomID()[:8], "nodl-"+broker.RandomID()[:8]
	ctl(t, "add_user", user, pass)
	t.Cleanup(func() { _, _ = brokertest.Rabbitmqctl("delete_user", user) })
	ctl(t, "set_permissions", "-p", vhost, user, ".*", `^(?!amq\.default$).*`, ".*")
	u, err := amqp.ParseURI(pkgVhost.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Username, u.Password = user, pass

	key := testutil.Key(t, "nodl")
	ev := &testutil.SupervisorEvents{}
	core, logs := observer.New(zapcore.DebugLevel)
	svc, err := hato.New("liveness-nodl", append(testutil.Options(t, u.String()), append(livenessOptions(),
		hato.WithSupervisorEvents(ev.Add), hato.WithLogger(zap.New(core)))...)...)
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
	if n := ev.Unavailable(route, hato.ErrDeadLetterFailing); n != 1 {
		t.Errorf("%d EventUnavailable wrapping ErrDeadLetterFailing, want 1", n)
	}
	waitProbe(t, svc, "/readyz", http.StatusServiceUnavailable, route, "dead-lettering failing")
	waitProbe(t, svc, "/metrics", http.StatusOK, `reason="dead_letter_failing"`)

	// Granted: the held copy goes through and the route is ready again.
	ctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")
	waitProbe(t, svc, "/readyz", http.StatusOK)
	conn := brokertest.Dial(t, pkgVhost.URL(t), "test-nodl-inspect")
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
	lose.Store(true) // the first session loses its deliveries
	t.Cleanup(func() { lose.Store(false) })
	svc, _, ev, got, route := startWatched(t, "liveness-lost", key, hato.Prefetch(2, 0))
	lose.Store(false) // the next session works
	publishN(t, publisher(t), key, fmtIDs("m", 5))

	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Unavailable(route, hato.ErrRouteStalled) > 0 },
		"an EventUnavailable of %s wrapping ErrRouteStalled", route)
	if r := ev.Reasons(route); !strings.Contains(r, "messages ready") {
		t.Errorf("route unavailable for %q, want messages ready and none delivered", r)
	}
	got.WaitDistinct(t, 5, 15*time.Second)
	waitProbe(t, svc, "/readyz", http.StatusOK)
}

// The broker scenarios live in test/integration; these liveness tests
// stay here because they need export_test.go's WithSessionStarter. Their
// helpers are testutil's, on this package's vhost (pkgVhost).

// newService makes a service on this package's vhost with test options.
func newService(t *testing.T, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	return testutil.NewService(t, pkgVhost.URL(t), name, opts...)
}

type payload = testutil.Payload

var idOf = testutil.IDOf

// publisher starts a service without routes, for publishing in tests.
func publisher(t *testing.T, opts ...hato.Option) *hato.Service {
	t.Helper()
	return testutil.Publisher(t, pkgVhost.URL(t), opts...)
}

// publishN publishes {"id": id} for each of ids (testutil.PublishN).
var publishN = testutil.PublishN

func fmtIDs(prefix string, n int) []string { return testutil.IDs(prefix, n) }

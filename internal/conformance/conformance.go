// Package conformance is a suite of scenarios that any transport a hato
// service runs on must pass alike: RabbitMQ, and hatotest's in-memory
// broker. The scenarios use hato services only (publishing, subscribing,
// failure handling, supervision) and read dead-letter queues through the
// Env, so the same code asserts the same behaviour on both; the in-memory
// broker cannot drift from the real one unnoticed.
//
// Every scenario keeps to routing keys and queue names under a prefix of
// its own, so scenarios (and repeated runs on one vhost) never share a
// queue.
package conformance

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/internal/transport"
)

// Env is the transport under test.
type Env interface {
	// Options connect a new service to the transport (and may add a test
	// logger).
	Options(t *testing.T) []hato.Option
	// DeadLetters waits until the named queue holds n messages and returns
	// them, failing the test after Timeout. It may take them out of the
	// queue.
	DeadLetters(t *testing.T, queue string, n int) []Message
	// Session starts a consuming session on the transport directly, as a
	// consumer actor does (broker.StartSession on a channel of its own
	// connection for RabbitMQ), for scenarios about settlement that no
	// service can provoke. The test's cleanup ends what is left of it.
	Session(t *testing.T, cfg broker.SessionConfig) transport.Session
}

// Message is a message read from a queue.
type Message struct {
	Headers amqp.Table
	Body    []byte
}

// Timeout bounds every wait of the suite.
const Timeout = 20 * time.Second

// Run runs every scenario against env.
func Run(t *testing.T, env Env) {
	for _, s := range []struct {
		name string
		run  func(*testing.T, *suite)
	}{
		{"RoutingTable", routingTable},
		{"CompetingAndNotCompeting", competing},
		{"Prefixes", prefixes},
		{"RetriesThenDeadLetter", retries},
		{"RequeueBoundedByMaxRedeliveries", requeues},
		{"DecodeErrorDeadLetteredAtOnce", decodeError},
		{"PanicRestartsRoute", panicRestart},
		{"PublishFromHandler", publishFromHandler},
		{"BreakerPauses", breakerPauses},
		{"RetryDelays", retryDelays},
		{"SecondSettlementFailsTheChannel", secondSettlement},
	} {
		t.Run(s.name, func(t *testing.T) {
			s.run(t, &suite{env: env, prefix: "conf-" + broker.RandomID()[:8] + "."})
		})
	}
}

// suite is one scenario's context: the env and the scenario's own prefix.
type suite struct {
	env    Env
	prefix string
}

// service makes a service on the transport under the scenario's prefixes.
func (s *suite) service(t *testing.T, name string, opts ...hato.Option) *hato.Service {
	t.Helper()
	base := append(s.env.Options(t), hato.RoutingKeyPrefix(s.prefix), hato.WithQueueNamePrefix(s.prefix),
		hato.WithDrainTimeout(5*time.Second))
	svc, err := hato.New(name, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// publisher starts a service without routes.
func (s *suite) publisher(t *testing.T, opts ...hato.Option) *hato.Service {
	t.Helper()
	p := s.service(t, "conf-publisher", opts...)
	start(t, p)
	return p
}

func start(t *testing.T, svc *hato.Service) {
	t.Helper()
	testutil.Start(t, svc)
}

func publish(t *testing.T, p *hato.Service, key string, data any, opts ...hato.PublishOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := p.Publish(ctx, data, key, opts...); err != nil {
		t.Fatalf("publish %q: %v", key, err)
	}
}

func subscribe[T any](t *testing.T, svc *hato.Service, key string, h hato.Handler[T], opts ...hato.RouteOption) {
	t.Helper()
	if err := hato.Subscribe(svc, key, h, opts...); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", Timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type item struct {
	Key    string `json:"key"`
	ID     string `json:"id"`
	Marker bool   `json:"marker"`
}

// record collects what handlers saw, by name.
type record struct {
	mu   sync.Mutex
	seen map[string][]string
}

func newRecord() *record { return &record{seen: map[string][]string{}} }

func (r *record) add(name, v string) {
	r.mu.Lock()
	r.seen[name] = append(r.seen[name], v)
	r.mu.Unlock()
}

func (r *record) get(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen[name]...)
}

func (r *record) count(name string) int { return len(r.get(name)) }

func sorted(v []string) string {
	v = append([]string(nil), v...)
	sort.Strings(v)
	return strings.Join(v, " ")
}

// routingTable: binding keys with * and # route as RabbitMQ's topic
// exchange does. Each route's queue is FIFO and handled one at a time, so
// once a route saw a marker published after every key, it saw every key it
// will ever get.
func routingTable(t *testing.T, s *suite) {
	table := []struct{ pattern, want string }{
		{"a.b", "a.b"},
		{"a.*", "a.b a.c"},
		{"a.#", "a a.b a.b.c a.c a.x.b"},
		{"*.b", "a.b x.b"},
		{"#.b", "a.b a.x.b b x.b"},
		{"a.#.b", "a.b a.x.b"},
		{"#", "a a.b a.b.c a.c a.x.b b c x.b"},
		{"*", "a b c"},
		{"z.#", ""},
	}
	keys := []string{"a", "a.b", "a.c", "a.b.c", "a.x.b", "b", "x.b", "c"}
	markers := []string{"a.b", "a.m", "m.b", "a.m.b", "m", "z"}
	rec := newRecord()
	svc := s.service(t, "conf-routing")
	for _, row := range table {
		subscribe(t, svc, row.pattern, func(_ context.Context, m *hato.Message[item]) error {
			if m.Data.Marker {
				rec.add(row.pattern+" marker", m.DeliveredRoutingKey)
			} else {
				rec.add(row.pattern, m.DeliveredRoutingKey)
			}
			return nil
		})
	}
	start(t, svc)
	p := s.publisher(t)
	for _, k := range keys {
		publish(t, p, k, item{Key: k})
	}
	for _, k := range markers {
		publish(t, p, k, item{Key: k, Marker: true})
	}
	for _, row := range table {
		waitFor(t, "a marker on "+row.pattern, func() bool { return rec.count(row.pattern+" marker") > 0 })
		if got := sorted(rec.get(row.pattern)); got != row.want {
			t.Errorf("binding %q got [%s], want [%s]", row.pattern, got, row.want)
		}
	}
}

// competing: two instances of a service share a competing route's queue
// (each message handled once) and each get every message of a
// non-competing route.
func competing(t *testing.T, s *suite) {
	const n = 10
	rec := newRecord()
	for i := range 2 {
		svc := s.service(t, "conf-compete")
		subscribe(t, svc, "shared", func(_ context.Context, m *hato.Message[item]) error {
			rec.add("shared", m.Data.ID)
			return nil
		})
		inst := fmt.Sprintf("own-%d", i)
		subscribe(t, svc, "own", func(_ context.Context, m *hato.Message[item]) error {
			rec.add(inst, m.Data.ID)
			return nil
		}, hato.NotCompeting())
		start(t, svc)
	}
	p := s.publisher(t)
	for i := range n {
		publish(t, p, "shared", item{ID: fmt.Sprint(i)})
		publish(t, p, "own", item{ID: fmt.Sprint(i)})
	}
	for _, inst := range []string{"own-0", "own-1"} {
		waitFor(t, inst+" to get every message", func() bool { return rec.count(inst) >= n })
	}
	waitFor(t, "the shared route to get every message", func() bool { return rec.count("shared") >= n })
	// The non-competing queues were filled after the shared one's messages
	// (publishes alternate), and the shared ones are delivered once: no
	// duplicate may show up.
	if got := rec.get("shared"); len(got) != n || distinct(got) != n {
		t.Errorf("competing route handled %v, want each of %d once", got, n)
	}
	for _, inst := range []string{"own-0", "own-1"} {
		if got := rec.get(inst); len(got) != n || distinct(got) != n {
			t.Errorf("non-competing route of %s handled %v, want each of %d once", inst, got, n)
		}
	}
}

func distinct(v []string) int {
	m := map[string]bool{}
	for _, x := range v {
		m[x] = true
	}
	return len(m)
}

// prefixes: a service's routing-key prefix is part of the binding; a
// message published without it does not reach the route, one with it
// does, and the handler sees the key without the prefix. A mandatory
// publish no queue takes fails with ErrUnroutable.
func prefixes(t *testing.T, s *suite) {
	rec := newRecord()
	svc := s.service(t, "conf-prefix", hato.RoutingKeyPrefix(s.prefix+"inner."))
	subscribe(t, svc, "k", func(_ context.Context, m *hato.Message[item]) error {
		rec.add("k", m.Data.ID+"@"+m.DeliveredRoutingKey)
		return nil
	})
	start(t, svc)
	if q := svc.Routes()[0].Queue; !strings.HasPrefix(q, s.prefix) {
		t.Errorf("queue %q lacks the queue-name prefix %q", q, s.prefix)
	}
	p := s.publisher(t)
	publish(t, p, "k", item{ID: "outer"})
	publish(t, p, "k", item{ID: "inner"}, hato.RoutingKeyPrefix(s.prefix+"inner."))
	waitFor(t, "the prefixed message", func() bool { return rec.count("k") > 0 })
	if got := rec.get("k"); len(got) != 1 || got[0] != "inner@k" {
		t.Errorf("route got %v, want [inner@k]", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	err := p.Publish(ctx, item{ID: "lost"}, "nobody.listens", hato.Mandatory())
	if !errors.Is(err, hato.ErrUnroutable) {
		t.Errorf("mandatory publish to no queue: %v, want ErrUnroutable", err)
	}
}

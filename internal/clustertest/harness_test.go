//go:build cluster

package clustertest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/clustertest"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// result is one row of the scenario table (the same columns as the fault
// suite's, test/faults): every published id is accounted for.
type result struct {
	scenario string
	testutil.Tally
	left      int           // messages left in the queue once the consumers stopped
	reconnect time.Duration // fault to the connection (or route) being ready again
	stall     time.Duration // longest pause between handler starts from the fault on
	notes     string
}

var (
	table = testutil.Table{
		Header: []string{"scenario", "published", "confirmed", "handled", "lost", "duplicates", "left", "reconnect", "max stall", "notes"},
		Align:  "lrrrrrrrrl",
	}
	throughput = testutil.Table{
		Header: []string{"hato processes", "messages", "time", "throughput"},
		Align:  "rrrr",
	}
)

func record(r result) {
	table.Add(r.scenario, r.Published, r.Confirmed, r.Handled, r.Lost, r.Duplicates, r.left,
		testutil.TableDuration(r.reconnect), testutil.TableDuration(r.stall), r.notes)
}

// printTable prints the results as Markdown tables (lines start with "|").
func printTable() {
	fmt.Println()
	table.Print(os.Stdout)
	if throughput.Len() > 0 {
		fmt.Println()
		throughput.Print(os.Stdout)
	}
	fmt.Println()
}

// scenario is the bookkeeping of one scenario: ids published with confirms,
// ids handled, supervision and delivery events, handler start times.
type scenario struct {
	t       *testing.T
	c       *clustertest.Cluster
	name    string
	svcName string
	key     string
	rate    int  // publishes per second; 0: as fast as confirms allow
	classic bool // the route's queue is a classic queue, not a quorum queue

	*testutil.Ledger
	events testutil.SupervisorEvents
	dl     testutil.DeliveryEvents

	mu         sync.Mutex
	starts     []time.Time
	faultStart time.Time
	faultEnd   time.Time // when the fault function returned (zero: not run through run)
}

func newScenario(t *testing.T, c *clustertest.Cluster, name string, n, rate int) *scenario {
	slug := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(name))
	if len(slug) > 60 {
		slug = slug[len(slug)-60:]
	}
	return &scenario{t: t, c: c, name: name, svcName: "cl-" + slug, key: "cluster." + slug,
		Ledger: testutil.NewLedger(t, n), rate: rate}
}

// options are the options of every service of the scenario: the given
// broker URLs, fast failure detection and reconnection, and a poison limit
// low enough that counting node-loss returns would show.
func (s *scenario) options(urls []string, extra ...hato.Option) []hato.Option {
	return append([]hato.Option{
		hato.WithURLs(urls...),
		hato.WithLogger(testutil.Logger(s.t)),
		hato.WithHeartbeat(2 * time.Second),
		hato.WithDialTimeout(3 * time.Second),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}),
		hato.WithDrainTimeout(10 * time.Second),
		hato.WithStartTimeout(time.Minute),
		hato.WithSupervisorEvents(s.events.Add),
		hato.WithDeliveryEvents(s.dl.Add),
		hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 2}),
	}, extra...)
}

// service starts the scenario's service: it publishes the ids and consumes
// them on one route (a quorum queue unless s.classic).
func (s *scenario) service(urls []string, ropts ...hato.RouteOption) *hato.Service {
	s.t.Helper()
	svc, err := hato.New(s.svcName, s.options(urls)...)
	if err != nil {
		s.t.Fatal(err)
	}
	err = hato.Subscribe(svc, s.key, func(_ context.Context, m *hato.Message[map[string]string]) error {
		now := time.Now()
		s.mu.Lock()
		s.starts = append(s.starts, now)
		s.mu.Unlock()
		s.Handled.Add(m.Data["id"])
		return nil
	}, s.routeOptions(ropts)...)
	if err != nil {
		s.t.Fatal(err)
	}
	began := time.Now()
	testutil.Start(s.t, svc)
	s.t.Logf("%s started in %s", svc.Name(), time.Since(began).Round(10*time.Millisecond))
	return svc
}

func (s *scenario) routeOptions(extra []hato.RouteOption) []hato.RouteOption {
	opts := []hato.RouteOption{hato.Concurrency(8)}
	if !s.classic {
		opts = append(opts, hato.QuorumQueue())
	}
	return append(opts, extra...)
}

// node is the cluster node of svc's connections (both on one node).
func (s *scenario) node(svc *hato.Service) int {
	s.t.Helper()
	var st hato.ConnectionStatus
	brokertest.WaitFor(s.t, time.Minute, func() bool {
		var err error
		st, err = svc.Status(context.Background())
		return err == nil && st.Connected
	}, "%s connected", svc.Name())
	n := s.c.NodeOf(st.PublishNode)
	if n < 0 || s.c.NodeOf(st.ConsumeNode) != n {
		s.t.Fatalf("connections on publish=%q consume=%q: not one node of the cluster %v", st.PublishNode, st.ConsumeNode, s.c.URLs())
	}
	return n
}

// awayFrom waits until svc is connected to another node than n and
// returns that node.
func (s *scenario) awayFrom(svc *hato.Service, n int, nodeOf func(string) int) int {
	s.t.Helper()
	m := -1
	brokertest.WaitFor(s.t, 2*time.Minute, func() bool {
		st, err := svc.Status(context.Background())
		if err != nil || !st.Connected {
			return false
		}
		m = nodeOf(st.PublishNode)
		return m >= 0 && m != n
	}, "%s to reconnect to another node than %d", svc.Name(), n)
	return m
}

// run publishes the ids through svc (which also consumes them), injects
// fault once 30 % are confirmed, waits for everything to be handled, stops
// svc and returns how many messages were left in its queue.
func (s *scenario) run(svc *hato.Service, fault func()) int {
	s.t.Helper()
	began := time.Now()
	done := s.PublishAll(svc, s.key, s.rate)
	s.WaitConfirmed(0.3)
	s.t.Logf("30%% confirmed after %s", time.Since(began).Round(10*time.Millisecond))
	s.faultStart = time.Now()
	fault()
	s.faultEnd = time.Now()
	s.phase("fault injected and recovered from")
	s.WaitPublished(done)
	s.phase("every publish returned")
	s.Settle(2 * time.Minute)
	s.phase("every confirmed id handled")
	queue := svc.Routes()[0].Queue
	testutil.Stop(s.t, svc)
	s.phase("service stopped")
	left := s.leftInQueue(queue)
	s.phase("queue inspected")
	return left
}

// phase logs how long after the fault a phase of run ended; a phase that
// ended over a minute after the fault was over fails the test (its logs
// are printed then). A fault that takes its time itself (a rolling restart
// of three nodes, slower on a loaded host) is not counted against hato.
func (s *scenario) phase(what string) {
	took := time.Since(s.faultStart)
	s.t.Logf("%s %s after the fault (confirmed %d, handled %d)", what, took.Round(10*time.Millisecond), s.Confirmed(), s.Handled.Distinct())
	since := s.faultStart
	if s.faultEnd.After(since) {
		since = s.faultEnd
	}
	if late := time.Since(since); late > time.Minute {
		s.t.Errorf("%s only %s after the fault (%s after it was over)", what, took.Round(time.Second), late.Round(time.Second))
	}
}

// leftInQueue counts the messages ready in queue, asking the first node
// that answers.
func (s *scenario) leftInQueue(queue string) int {
	s.t.Helper()
	var errs []error
	for _, url := range s.c.URLs() {
		conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, _, err := brokertest.InspectQueue(conn, queue)
		_ = conn.Close()
		if err != nil {
			s.t.Errorf("inspect %s: %v", queue, err)
		}
		return n
	}
	s.t.Errorf("no node answered to inspect the queue: %v", errors.Join(errs...))
	return 0
}

// reconnected is the time from the fault to the first EventReady of child
// (a prefix: "connection", "route-") after it; zero if none.
func (s *scenario) reconnected(child string) time.Duration {
	for _, e := range s.events.Snapshot() {
		if e.Kind == hato.EventReady && strings.HasPrefix(e.Child, child) && e.Time.After(s.faultStart) {
			return e.Time.Sub(s.faultStart)
		}
	}
	return 0
}

// stall is the longest pause between handler starts from the fault on (the
// pause that spans the fault included).
func (s *scenario) stall() time.Duration {
	s.mu.Lock()
	starts := slices.Clone(s.starts)
	s.mu.Unlock()
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(starts); i++ {
		if starts[i].After(s.faultStart) {
			longest = max(longest, starts[i].Sub(starts[i-1]))
		}
	}
	return longest
}

// finish records the row and fails the test on a lost message, a message
// left in the queue, a failed publish, a dead-lettered message (node loss
// must not count as poison) or an ack sent on the wrong channel.
func (s *scenario) finish(left int, reconnect time.Duration, notes string) {
	s.t.Helper()
	res := result{scenario: s.name, Tally: s.Tally(), left: left, reconnect: reconnect, stall: s.stall(), notes: notes}
	record(res)
	s.t.Logf("%s: %+v", s.name, res)
	s.Check(s.t, res.Tally)
	if left > 0 {
		s.t.Errorf("%d messages left in the queue", left)
	}
	for _, e := range s.dl.Snapshot() {
		s.t.Errorf("delivery event: %s %s: %v", e.Action, e.MessageID, e.Err)
	}
	for _, e := range s.events.Snapshot() {
		if e.Reason != nil && strings.Contains(e.Reason.Error(), "unknown delivery tag") {
			s.t.Errorf("an ack went to the wrong channel: %s", e)
		}
	}
}

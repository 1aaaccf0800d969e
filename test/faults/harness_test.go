//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// N is the number of messages per scenario.
const N = 10000

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(leak.Options()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// result is one row of the table.
type result struct {
	scenario string
	testutil.Tally
	unacked  int
	recovery time.Duration
	notes    string
}

// table is the scenario table, the same columns as the cluster suite's
// (internal/clustertest) but for those only a cluster has.
var table = testutil.Table{
	Header: []string{"scenario", "published", "confirmed", "handled", "lost", "duplicates", "unacked", "recovery", "notes"},
	Align:  "lrrrrrrrl",
}

func record(r result) {
	table.Add(r.scenario, r.Published, r.Confirmed, r.Handled, r.Lost, r.Duplicates, r.unacked, testutil.TableDuration(r.recovery), r.notes)
}

// printTable prints the results as a Markdown table (lines start with "|").
func printTable() {
	fmt.Println()
	table.Print(os.Stdout)
	fmt.Println()
}

// run is the bookkeeping of one scenario.
type run struct {
	t    *testing.T
	name string
	url  string
	key  string
	*testutil.Ledger

	mu       sync.Mutex
	starts   []time.Time // handler starts
	confirms []time.Time // publish confirmations
	ready    []time.Time // EventReady of the consumer's routes (reconnected)
	down     []time.Time // EventUnavailable of the consumer's routes (lost)

	faultStart, faultEnd time.Time
}

func newRun(t *testing.T, name string, n int) *run {
	_, url := brokertest.NewVhost(t)
	key := strings.ReplaceAll(name, " ", "-") + ".events"
	r := &run{t: t, name: name, url: url, key: key, Ledger: testutil.NewLedger(t, n)}
	r.OnConfirm = r.confirmedNow
	return r
}

// confirmedNow records when a publish was confirmed.
func (r *run) confirmedNow() {
	now := time.Now()
	r.mu.Lock()
	r.confirms = append(r.confirms, now)
	r.mu.Unlock()
}

// opts are the options of every service of the scenario.
func (r *run) opts(extra ...hato.Option) []hato.Option {
	base := append(testutil.Options(r.t, r.url),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}),
		hato.WithHeartbeat(2*time.Second),
		hato.WithDrainTimeout(10*time.Second),
	)
	return append(base, extra...)
}

// started records a handler start.
func (r *run) started() {
	now := time.Now()
	r.mu.Lock()
	r.starts = append(r.starts, now)
	r.mu.Unlock()
}

// onEvent records when the consumer's routes became ready again.
func (r *run) onEvent(e hato.SupervisorEvent) {
	if !strings.HasPrefix(e.Child, "route-") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case hato.EventReady:
		r.ready = append(r.ready, e.Time)
	case hato.EventUnavailable:
		r.down = append(r.down, e.Time)
	}
}

// lostAt is when a route first lost its channel after t0 (the moment a
// connection fault actually hit, whatever the injecting command's latency).
func (r *run) lostAt(t0 time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return first(r.down, t0)
}

// first returns the first time in ts after t0 (zero if none).
func first(ts []time.Time, t0 time.Time) time.Time {
	for _, t := range ts {
		if t.After(t0) {
			return t
		}
	}
	return time.Time{}
}

// Recovery measures, from the fault's start to: a route consuming again
// (reconnected), a handler starting after the fault ended, or a publish
// confirmed after the fault ended.
func (r *run) sinceFault(t time.Time) time.Duration {
	if t.IsZero() || r.faultStart.IsZero() {
		return 0
	}
	return t.Sub(r.faultStart)
}

func (r *run) reconnected(routes int) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, last := 0, time.Time{}
	for _, t := range r.ready {
		if t.After(r.faultStart) {
			n++
			last = t
			if n == routes {
				break
			}
		}
	}
	if n < routes {
		return 0
	}
	return r.sinceFault(last)
}

func (r *run) handledAfterFault() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sinceFault(first(r.starts, r.faultEnd))
}

func (r *run) confirmedAfterFault() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sinceFault(first(r.confirms, r.faultEnd))
}

// leftInQueues counts messages still in the queues (ready or unacked)
// once every consumer is gone.
func (r *run) leftInQueues(queues ...string) int {
	conn := brokertest.Dial(r.t, r.url, "faults-inspector-"+strings.ReplaceAll(r.name, " ", "-"))
	total := 0
	for _, q := range queues {
		n, _, err := brokertest.InspectQueue(conn, q)
		if err != nil {
			r.t.Errorf("inspect %s: %v", q, err)
			continue
		}
		total += n
	}
	return total
}

// finish builds and records the row, failing the test on a lost message or
// a message left in the queue.
func (r *run) finish(left int, recovery time.Duration, notes string) result {
	res := result{scenario: r.name, Tally: r.Tally(), unacked: left, recovery: recovery, notes: notes}
	record(res)
	r.Check(r.t, res.Tally)
	if res.unacked > 0 {
		r.t.Errorf("%d messages left in the queues", res.unacked)
	}
	return res
}

// consumer makes the scenario's consuming service with one route on the
// scenario key whose handler records ids (then calls extra, if any).
func (r *run) consumer(name string, extra func(ctx context.Context, id string) error, opts []hato.Option, ropts ...hato.RouteOption) *hato.Service {
	svc, err := hato.New(name, r.opts(append([]hato.Option{hato.WithSupervisorEvents(r.onEvent)}, opts...)...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	err = hato.Subscribe(svc, r.key, func(ctx context.Context, m *hato.Message[map[string]string]) error {
		r.started()
		id := m.Data["id"]
		if extra != nil {
			if err := extra(ctx, id); err != nil {
				return err
			}
		}
		r.Handled.Add(id)
		return nil
	}, ropts...)
	if err != nil {
		r.t.Fatal(err)
	}
	return svc
}

func (r *run) publisher(name string, opts ...hato.Option) *hato.Service {
	p, err := hato.New(name, r.opts(opts...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	testutil.Start(r.t, p)
	return p
}

func amqpDial(t *testing.T, url string) *amqp.Connection {
	return brokertest.Dial(t, url, "faults-driver")
}

// fastSupervision restarts crashed routes quickly, with a budget no
// scenario exhausts.
var fastSupervision = hato.Supervision(hato.RestartPolicy{
	Backoff:     hato.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
	MaxRestarts: 200,
	Window:      time.Minute,
})

//go:build integration

package pgoutbox_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/outbox/pgoutbox"
	"github.com/hato-go/hato/test/brokertest"
)

// schema returns a pool and a schema unique to t, dropped at cleanup.
func schema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), brokertest.PostgresURL())
	if err != nil {
		t.Fatalf("postgres at %s: %v (run scripts/postgres.sh ensure)", brokertest.PostgresURL(), err)
	}
	exec := func(ctx context.Context, sql string) error { _, err := pool.Exec(ctx, sql); return err }
	return pool, brokertest.PostgresSchema(t, "hato_outbox_test", pool.Ping, exec, pool.Close)
}

func newOutbox(t testing.TB, pool *pgxpool.Pool, sch string, opts ...pgoutbox.Option) *pgoutbox.Outbox {
	ob, err := pgoutbox.New(pool, append([]pgoutbox.Option{pgoutbox.WithTable(sch + ".outbox")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ob
}

// receiver counts messages by uuid on routing keys, in arrival order.
type receiver struct {
	mu    sync.Mutex
	count map[string]int
	order map[string][]int // routing key → seq, in arrival order
}

func (r *receiver) n() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.count) }

func startService(t testing.TB, url, name string, opts ...hato.Option) *hato.Service {
	svc, err := hato.New(name, append([]hato.Option{hato.WithURL(url)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func run(t testing.TB, svc *hato.Service) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop(context.Background()) })
}

func consumer(t testing.TB, url string, keys ...string) *receiver {
	r := &receiver{count: map[string]int{}, order: map[string][]int{}}
	svc := startService(t, url, "outbox-consumer")
	for _, k := range keys {
		err := hato.Subscribe(svc, k, func(_ context.Context, m *hato.Message[map[string]int]) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.count[m.MessageUUID()]++
			r.order[m.Metadata.Topic] = append(r.order[m.Metadata.Topic], m.Data["seq"])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	run(t, svc)
	return r
}

// write commits n messages to key in transactions of per, returning ids.
func write(t testing.TB, pool *pgxpool.Pool, ob *pgoutbox.Outbox, svc *hato.Service, key string, n, per int) []string {
	var ids []string
	ctx := context.Background()
	for i := 0; i < n; i += per {
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for j := i; j < min(i+per, n); j++ {
				id, err := ob.Publish(ctx, tx, svc, map[string]int{"seq": j}, key)
				if err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

func backlog(t testing.TB, pool *pgxpool.Pool, sch string) int {
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+sch+".outbox").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Committed rows are relayed once each and deleted; rolled back ones never.
func TestRelay(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	pool, sch := schema(t)
	recv := consumer(t, url, "order.created")
	ob := newOutbox(t, pool, sch)
	svc := startService(t, url, "outbox-writer", hato.WithComponent(ob))
	run(t, svc)
	ids := write(t, pool, ob, svc, "order.created", 200, 10)

	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost, err := ob.Publish(ctx, tx, svc, map[string]int{"seq": -1}, "order.created")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return recv.n() >= len(ids) }, "every committed message")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return backlog(t, pool, sch) == 0 }, "an empty outbox")
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for _, id := range ids {
		if recv.count[id] != 1 {
			t.Errorf("message %s received %d times", id, recv.count[id])
		}
	}
	if recv.count[lost] != 0 {
		t.Error("a rolled back message was published")
	}
	if err := svc.Ready(); err != nil {
		t.Errorf("ready: %v", err)
	}
	if st := ob.Stats(); st.Published != uint64(len(ids)) || st.Failures != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Two relays share one table; one stops abruptly mid-stream (its batch in
// flight rolls back): every message still arrives, duplicates at most the
// rows it had in flight, each with its message uuid.
func TestRelaysShareAndSurviveStop(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	pool, sch := schema(t)
	recv := consumer(t, url, "order.created")
	const batch = 20
	obA := newOutbox(t, pool, sch, pgoutbox.WithBatch(batch))
	obB := newOutbox(t, pool, sch, pgoutbox.WithBatch(batch))
	svcA := startService(t, url, "outbox-writer", hato.WithComponent(obA))
	svcB := startService(t, url, "outbox-writer", hato.WithComponent(obB))
	run(t, svcA)
	run(t, svcB)
	ids := write(t, pool, obA, svcA, "order.created", 1000, 50)
	brokertest.WaitFor(t, 30*time.Second, func() bool { return recv.n() >= 200 }, "relaying under way")
	stopped, cancel := context.WithCancel(context.Background())
	cancel() // no drain: the relay's batch is abandoned
	_ = svcA.Stop(stopped)
	brokertest.WaitFor(t, 60*time.Second, func() bool { return recv.n() >= len(ids) }, "every message")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return backlog(t, pool, sch) == 0 }, "an empty outbox")
	recv.mu.Lock()
	defer recv.mu.Unlock()
	dups := 0
	for _, id := range ids {
		switch n := recv.count[id]; {
		case n == 0:
			t.Errorf("message %s lost", id)
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d messages, relays A and B, A stopped mid-stream: 0 lost, %d duplicates (A's batch is %d)", len(ids), dups, batch)
	if dups > batch {
		t.Errorf("%d duplicates, more than a batch in flight (%d)", dups, batch)
	}
	if obB.Stats().Published == 0 || obA.Stats().Published == 0 {
		t.Errorf("relays did not share: A %+v B %+v", obA.Stats(), obB.Stats())
	}
}

// WithOrdered: two relays, three keys; each key's messages arrive in
// commit order.
func TestOrdered(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	pool, sch := schema(t)
	keys := []string{"ord.a", "ord.b", "ord.c"}
	recv := consumer(t, url, keys...)
	obA := newOutbox(t, pool, sch, pgoutbox.WithOrdered(), pgoutbox.WithBatch(7))
	obB := newOutbox(t, pool, sch, pgoutbox.WithOrdered(), pgoutbox.WithBatch(7))
	svcA := startService(t, url, "outbox-writer", hato.WithComponent(obA))
	svcB := startService(t, url, "outbox-writer", hato.WithComponent(obB))
	run(t, svcA)
	run(t, svcB)
	total := 0
	for i := 0; i < 60; i += 5 {
		for _, k := range keys {
			total += len(write(t, pool, obA, svcA, k, 5, 5)) // seq 0..4 per call: offset below
		}
	}
	_ = total
	brokertest.WaitFor(t, 30*time.Second, func() bool { return recv.n() >= total }, "every message")
	recv.mu.Lock()
	defer recv.mu.Unlock()
	for _, k := range keys {
		got := recv.order[k]
		for i := range got {
			if got[i] != i%5 {
				t.Fatalf("key %s out of order: %v", k, got)
			}
		}
	}
}

// A relay that cannot reach the database reports not ready.
func TestNotReadyWithoutDatabase(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://x:y@127.0.0.1:1/none?connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ob, err := pgoutbox.New(pool, pgoutbox.WithPollInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := hato.New("outbox-unready")
	if err != nil {
		t.Fatal(err)
	}
	if err := ob.Ready(); !errors.Is(err, pgoutbox.ErrNotReady) {
		t.Fatalf("before start: %v", err)
	}
	if err := ob.Start(context.Background(), svc); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ob.Stop(context.Background()) }()
	brokertest.WaitFor(t, 10*time.Second, func() bool { return errors.Is(ob.Ready(), pgoutbox.ErrNotReady) }, "not ready")
}

func TestBadOptions(t *testing.T) {
	pool := &pgxpool.Pool{}
	for _, o := range []pgoutbox.Option{pgoutbox.WithTable("a;b"), pgoutbox.WithBatch(0), pgoutbox.WithPollInterval(0), nil} {
		if _, err := pgoutbox.New(pool, o); !errors.Is(err, pgoutbox.ErrInvalidOption) {
			t.Errorf("option accepted: %v", err)
		}
	}
}

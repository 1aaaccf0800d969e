//go:build integration

package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/dedupe/dedupetest"
	"github.com/hato-go/hato/dedupe/pgstore"
	"github.com/hato-go/hato/test/brokertest"
)

// schema returns a pool and a schema unique to t, dropped at cleanup. A
// missing PostgreSQL fails the test (scripts/postgres.sh ensure sets one
// up).
func schema(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), brokertest.PostgresURL())
	if err != nil {
		t.Fatalf("postgres at %s: %v (run scripts/postgres.sh ensure)", brokertest.PostgresURL(), err)
	}
	exec := func(ctx context.Context, sql string) error { _, err := pool.Exec(ctx, sql); return err }
	return pool, brokertest.PostgresSchema(t, "hato_test", pool.Ping, exec, pool.Close)
}

func newStore(t testing.TB, opts ...pgstore.Option) (*pgstore.Store, *pgxpool.Pool, string) {
	pool, sch := schema(t)
	s, err := pgstore.New(pool, append([]pgstore.Option{pgstore.WithTable(sch + ".dedupe")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(context.Background()); err != nil { // idempotent
		t.Fatal(err)
	}
	return s, pool, sch
}

func TestConformance(t *testing.T) {
	dedupetest.Conformance(t, func(t *testing.T) hato.DedupeClaimer {
		s, _, _ := newStore(t)
		return s
	})
}

func TestBadTable(t *testing.T) {
	for _, name := range []string{"", "a.b.c", "x; DROP TABLE y", "1abc"} {
		if _, err := pgstore.New(&pgxpool.Pool{}, pgstore.WithTable(name)); !errors.Is(err, pgstore.ErrInvalidOption) {
			t.Errorf("table %q: %v", name, err)
		}
	}
}

// Sweep deletes expired rows in batches and keeps live ones.
func TestSweep(t *testing.T) {
	s, pool, sch := newStore(t, pgstore.WithSweep(0, 7, nil))
	ctx := context.Background()
	for i := range 20 {
		if err := s.Record(ctx, fmt.Sprint("old", i), time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Record(ctx, "live", time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, "claimed", "o", time.Hour); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the old rows' ttl passes (database clock)
	n, err := s.Sweep(ctx)
	if err != nil || n != 20 {
		t.Fatalf("swept %d (%v), want 20", n, err)
	}
	var left int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{sch, "dedupe"}.Sanitize()).Scan(&left); err != nil || left != 2 {
		t.Fatalf("%d rows left (%v), want 2", left, err)
	}
}

// The sweeping goroutine runs on its own and stops with Close.
func TestSweeper(t *testing.T) {
	s, _, _ := newStore(t, pgstore.WithSweep(20*time.Millisecond, 100, nil))
	ctx := context.Background()
	if err := s.Record(ctx, "old", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.Claim(ctx, "old", "probe", time.Millisecond) // re-creates a short claim
		if err != nil {
			t.Fatal(err)
		}
		if st == hato.ClaimTaken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("record never expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
	s.Close()
}

func TestCrash(t *testing.T) {
	pool, sch := schema(t)
	ctx := context.Background()
	s, err := pgstore.New(pool, pgstore.WithTable(sch+".dedupe"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	effects := pgx.Identifier{sch, "effects"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+effects+" (id text PRIMARY KEY, n int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	dedupetest.Crash(t, dedupetest.CrashConfig{
		Node:     "./internal/crashnode",
		Env:      []string{"HATO_TEST_PG_URL=" + brokertest.PostgresURL(), "HATO_CRASH_SCHEMA=" + sch},
		Messages: 600,
		Effects: func(ctx context.Context) (map[string]int, error) {
			rows, err := pool.Query(ctx, "SELECT id, n FROM "+effects)
			if err != nil {
				return nil, err
			}
			m := map[string]int{}
			var id string
			var n int
			_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { m[id] = n; return nil })
			return m, err
		},
	})
}

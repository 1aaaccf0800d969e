package brokertest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// PostgresURL is the PostgreSQL that the tests of hato's PostgreSQL
// modules (dedupe/pgstore, outbox/pgoutbox) use: HATO_TEST_PG_URL, else
// the database `scripts/postgres.sh ensure` sets up.
func PostgresURL() string {
	if u := os.Getenv("HATO_TEST_PG_URL"); u != "" {
		return u
	}
	return "postgres://hato:hato@127.0.0.1:5432/hato_test"
}

// PostgresSchema creates a schema unique to t, named prefix_<nanoseconds>,
// and returns its name; at cleanup it drops the schema, then calls
// closePool. ping and exec are those of the caller's pool (this module
// has no PostgreSQL driver; the modules that test against PostgreSQL
// bring theirs). A ping that fails fails the test, naming the URL and
// how to set PostgreSQL up: it is never optional, as the broker is not.
func PostgresSchema(t testing.TB, prefix string, ping func(context.Context) error,
	exec func(ctx context.Context, sql string) error, closePool func()) string {
	t.Helper()
	t.Cleanup(closePool)
	ctx := context.Background()
	if err := ping(ctx); err != nil {
		t.Fatalf("postgres at %s: %v (run scripts/postgres.sh ensure)", PostgresURL(), err)
	}
	name := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	if err := exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec(context.Background(), "DROP SCHEMA "+name+" CASCADE") })
	return name
}

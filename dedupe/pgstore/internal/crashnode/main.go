// Command crashnode is a node of the fleet crash test (dedupetest.Crash):
// its handler's effect, a counter row per message, commits in one
// transaction with the dedupe record.
package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hato-go/hato/dedupe/dedupetest"
	"github.com/hato-go/hato/dedupe/pgstore"
)

func main() {
	pool, err := pgxpool.New(context.Background(), os.Getenv("HATO_TEST_PG_URL"))
	if err != nil {
		panic(err)
	}
	schema := os.Getenv("HATO_CRASH_SCHEMA")
	store, err := pgstore.New(pool, pgstore.WithTable(schema+".dedupe"))
	if err != nil {
		panic(err)
	}
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	dedupetest.RunNode(store, func(ctx context.Context, key string, window time.Duration) error {
		uuid := key[strings.LastIndex(key, "/")+1:]
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO `+effects+` (id, n) VALUES ($1, 1)
ON CONFLICT (id) DO UPDATE SET n = `+effects+`.n + 1`, uuid); err != nil {
				return err
			}
			return store.RecordTx(ctx, tx, key, window)
		})
	})
}

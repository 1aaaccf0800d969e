// Command crashnode is a node of the fleet crash test (dedupetest.Crash):
// its handler's effect, INCR of a counter per message, commits in one
// MULTI/EXEC with the dedupe record.
package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hato-go/hato/dedupe/dedupetest"
	"github.com/hato-go/hato/dedupe/redisstore"
)

func main() {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("HATO_TEST_REDIS_ADDR")})
	prefix := os.Getenv("HATO_CRASH_PREFIX")
	store, err := redisstore.New(rdb, redisstore.WithPrefix(prefix))
	if err != nil {
		panic(err)
	}
	dedupetest.RunNode(store, func(ctx context.Context, key string, window time.Duration) error {
		uuid := key[strings.LastIndex(key, "/")+1:]
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, prefix+"effect:"+uuid)
			store.RecordTx(p, key, window)
			return nil
		})
		return err
	})
}

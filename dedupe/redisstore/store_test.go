//go:build integration

package redisstore_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/dedupe/dedupetest"
	"github.com/hato-go/hato/dedupe/redisstore"
)

func addr() string {
	if a := os.Getenv("HATO_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// client returns a client and a key prefix unique to t; the prefix's keys
// are deleted at cleanup. A missing Redis fails the test (scripts/redis.sh
// ensure starts one).
func client(t testing.TB) (*redis.Client, string) {
	rdb := redis.NewClient(&redis.Options{Addr: addr()})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v (run scripts/redis.sh ensure)", addr(), err)
	}
	prefix := fmt.Sprintf("hato-test:%s:%d:", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		it := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for it.Next(ctx) {
			rdb.Del(ctx, it.Val())
		}
		_ = rdb.Close()
	})
	return rdb, prefix
}

func TestConformance(t *testing.T) {
	dedupetest.Conformance(t, func(t *testing.T) hato.DedupeClaimer {
		rdb, prefix := client(t)
		s, err := redisstore.New(rdb, redisstore.WithPrefix(prefix))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A store whose server is gone fails every call with an error (hato fails
// open on it) within the caller's deadline.
func TestUnreachable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	s, _ := redisstore.New(rdb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.Claim(ctx, "k", "o", time.Second); err == nil {
		t.Fatal("claim on an unreachable server succeeded")
	}
}

func TestCrash(t *testing.T) {
	rdb, prefix := client(t)
	dedupetest.Crash(t, dedupetest.CrashConfig{
		Node:     "./internal/crashnode",
		Env:      []string{"HATO_TEST_REDIS_ADDR=" + addr(), "HATO_CRASH_PREFIX=" + prefix},
		Messages: 600,
		Effects: func(ctx context.Context) (map[string]int, error) {
			m := map[string]int{}
			it := rdb.Scan(ctx, 0, prefix+"effect:*", 1000).Iterator()
			for it.Next(ctx) {
				n, err := rdb.Get(ctx, it.Val()).Int()
				if err != nil {
					return nil, err
				}
				m[strings.TrimPrefix(it.Val(), prefix+"effect:")] = n
			}
			return m, it.Err()
		},
	})
}

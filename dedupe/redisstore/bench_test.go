//go:build integration

package redisstore_test

import (
	"testing"

	"github.com/hato-go/hato/dedupe/dedupetest"
	"github.com/hato-go/hato/dedupe/redisstore"
)

// BenchmarkDedupe: Claim+Record on Redis vs Seen+Record in memory, per
// message (see dedupetest.BenchStore).
func BenchmarkDedupe(b *testing.B) {
	rdb, prefix := client(b)
	s, err := redisstore.New(rdb, redisstore.WithPrefix(prefix))
	if err != nil {
		b.Fatal(err)
	}
	dedupetest.BenchStore(b, s)
}

//go:build integration

package pgstore_test

import (
	"testing"

	"github.com/hato-go/hato/dedupe/dedupetest"
)

// BenchmarkDedupe: Claim+Record on PostgreSQL vs Seen+Record in memory,
// per message (see dedupetest.BenchStore).
func BenchmarkDedupe(b *testing.B) {
	s, _, _ := newStore(b)
	dedupetest.BenchStore(b, s)
}

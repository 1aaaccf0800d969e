// Package testutil holds helpers for hato's integration tests: a logger
// that shows its output only when a test fails, a concurrent collector of
// handled messages, the ledger the fault and cluster suites account for
// every message with, and service start/stop with cleanup.
package testutil

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/test/brokertest"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Sync() error { return nil }

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Logger returns a debug-level logger whose output is printed only if the
// test fails. Unlike zaptest it never writes to t after the test ended, so
// actors logging late are safe.
func Logger(t testing.TB) *zap.Logger {
	buf := &syncBuffer{}
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	l := zap.New(zapcore.NewCore(enc, buf, zap.DebugLevel))
	t.Cleanup(func() {
		if t.Failed() {
			out := buf.String()
			const max = 200 << 10
			if len(out) > max {
				out = "...\n" + out[len(out)-max:]
			}
			t.Logf("service log:\n%s", out)
		}
	})
	return l
}

// Key returns a routing-key-safe name unique to the test, to keep tests in
// one vhost apart.
func Key(t testing.TB, suffix string) string {
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, t.Name())
	return fmt.Sprintf("%s-%s.%s", name, broker.RandomID()[:6], suffix)
}

// Options are the options every test service gets: the test vhost's URL,
// the test logger, a fast reconnect and short drain and start timeouts.
func Options(t testing.TB, url string) []hato.Option {
	return []hato.Option{
		hato.WithURL(url),
		hato.WithLogger(Logger(t)),
		hato.WithDrainTimeout(5 * time.Second),
		hato.WithStartTimeout(20 * time.Second),
	}
}

// Start starts svc (failing the test on error) and stops it at cleanup.
func Start(t testing.TB, svc *hato.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", svc.Name(), err)
	}
	t.Cleanup(func() {
		select {
		case <-svc.Done(): // the test stopped it and checked the result
		default:
			Stop(t, svc)
		}
	})
}

// Stop stops svc within 30 s, failing the test on error.
func Stop(t testing.TB, svc *hato.Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		t.Errorf("stop %s: %v", svc.Name(), err)
	}
}

// Collector records handled message keys from many goroutines.
type Collector struct {
	mu     sync.Mutex
	counts map[string]int
	order  []string
	total  int
}

// NewCollector returns an empty collector.
func NewCollector() *Collector { return &Collector{counts: map[string]int{}} }

// Add records one handling of key.
func (c *Collector) Add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts[key] == 0 {
		c.order = append(c.order, key)
	}
	c.counts[key]++
	c.total++
}

// Distinct is the number of distinct keys seen.
func (c *Collector) Distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.counts)
}

// Total is the number of handlings, duplicates included.
func (c *Collector) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Count is how often key was handled.
func (c *Collector) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

// Keys returns the distinct keys in first-seen order.
func (c *Collector) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

// Missing returns which of want were never seen.
func (c *Collector) Missing(want []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, k := range want {
		if c.counts[k] == 0 {
			out = append(out, k)
		}
	}
	return out
}

// WaitDistinct waits until n distinct keys were seen.
func (c *Collector) WaitDistinct(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	brokertest.WaitFor(t, timeout, func() bool { return c.Distinct() >= n },
		"%d distinct messages handled", n)
}

// IDs returns "prefix-0" … "prefix-(n-1)".
func IDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

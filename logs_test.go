//go:build integration

package hato_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) Sync() error { return nil }

func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// jsonKeys returns the top-level keys of a JSON object in order, repeats
// included.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		keys = append(keys, k.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
	}
	return keys
}

// Issue 19: "handler failed; retrying" and "message dead-lettered" held the
// keys route and routing_key twice; a dead-lettered message was logged at
// error level with a stack trace of hato's and protoactor's internals; at
// shutdown protoactor's "[DeadLetter]" lines came out at info.
func TestRetryAndDeadLetterLogLines(t *testing.T) {
	buf := &lockedBuffer{}
	// As zap.NewProduction, which Run uses: JSON, stack traces from error.
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), buf, zap.InfoLevel),
		zap.AddStacktrace(zap.ErrorLevel))
	key := testutil.Key(t, "logs")
	evs := &testutil.DeliveryEvents{}
	svc := newService(t, "logs", hato.WithLogger(log), hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		return errors.New("always fails")
	}, hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 2, Backoff: hato.Backoff{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}}))
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"bad"})
	brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() >= 1 }, "dead-lettered")
	testutil.Stop(t, svc)

	seen := map[string]bool{}
	for _, line := range buf.lines() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		msg, _ := rec["msg"].(string)
		seen[msg] = true
		keys := jsonKeys(t, line)
		dup := map[string]bool{}
		for _, k := range keys {
			if dup[k] {
				t.Errorf("%q holds the key %q twice: %s", msg, k, line)
			}
			dup[k] = true
		}
		if msg == "message dead-lettered" && (rec["level"] != "warn" || rec["stacktrace"] != nil) {
			t.Errorf("dead-lettered line at %v with stack %v, want warn without a stack", rec["level"], rec["stacktrace"] != nil)
		}
		if strings.HasPrefix(msg, "[DeadLetter]") {
			t.Errorf("protoactor's dead-letter line at %v: %s", rec["level"], line)
		}
	}
	for _, want := range []string{"handler failed; retrying", "message dead-lettered"} {
		if !seen[want] {
			t.Errorf("no %q line in\n%s", want, strings.Join(buf.lines(), "\n"))
		}
	}
}

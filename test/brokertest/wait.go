package brokertest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// PollInterval is the pause between two evaluations of a condition in
// WaitFor, Eventually and Poll.
const PollInterval = 10 * time.Millisecond

// Poll evaluates cond immediately and then every PollInterval until it
// returns true (nil) or ctx is done (ctx.Err()). cond is never called
// concurrently with itself.
func Poll(ctx context.Context, cond func() bool) error {
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			// One last look: cond may have become true while we waited.
			if cond() {
				return nil
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// Eventually is Poll with a timeout, for use outside of tests (TestMain,
// helpers without a testing.TB). The error says how long it waited.
func Eventually(timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, cond); err != nil {
		return fmt.Errorf("condition not met within %v", timeout)
	}
	return nil
}

// WaitFor polls cond every PollInterval and fails the test with
// "timed out after <timeout> waiting for <format, args...>" if it does not
// become true within timeout. Use it instead of sleeping.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	if err := Eventually(timeout, cond); err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(format, args...))
	}
}

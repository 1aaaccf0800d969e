// Package leak holds the goleak options shared by hato's test packages.
package leak

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"
)

// Options ignores goroutines that libraries start and end by themselves
// within a bounded time, so they are not leaks of ours:
//
//   - Proto.Actor's dead-letter log throttle runs a one-shot timer
//     goroutine for DeadLetterThrottleInterval (1 s) after a dead letter.
func Options() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewThrottleWithLogger.func1.1"),
	}
}

// VerifyTestMain runs the package's tests and fails if goroutines leak.
func VerifyTestMain(m *testing.M, extra ...goleak.Option) {
	goleak.VerifyTestMain(m, append(Options(), extra...)...)
}

// Find reports goroutines still running, ignoring Options; for TestMain
// functions that run other cleanup first (see brokertest.Main).
func Find() error {
	if err := goleak.Find(Options()...); err != nil {
		return fmt.Errorf("goroutine leak: %w", err)
	}
	return nil
}

package hato

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Exit codes of Main (and ExitCode), for scripts and process supervisors.
const (
	// ExitOK: the service ran and stopped cleanly (signal or context).
	ExitOK = 0
	// ExitStartFailed: the service could not start: invalid configuration,
	// broker unreachable within the start timeout, credentials or a topology
	// declaration refused.
	ExitStartFailed = 1
	// ExitFailed: the service stopped because of a fatal failure while
	// running (a route gave up).
	ExitFailed = 3
	// ExitStopIncomplete: shutdown did not finish cleanly: the drain
	// deadline passed (unfinished deliveries went back to the broker) or a
	// publish stayed unconfirmed.
	ExitStopIncomplete = 4
)

// RunError is what Run returns on failure; Code is the exit code for it.
type RunError struct {
	Code int
	Err  error
}

func (e *RunError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *RunError) Unwrap() error { return e.Err }

// ExitCode maps Run's result to an exit code: 0 for nil, the RunError's code,
// ExitStartFailed for anything else.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var re *RunError
	if errors.As(err, &re) {
		return re.Code
	}
	return ExitStartFailed
}

// Run starts the service, blocks until SIGINT or SIGTERM arrives, ctx ends,
// or a fatal failure occurs, then stops it gracefully (see Stop). A second
// signal during shutdown ends the process at once. Without WithLogger, Run
// logs with a production zap logger.
func (s *Service) Run(ctx context.Context) error {
	if !s.cfg.loggerSet {
		if l, err := zap.NewProduction(); err == nil {
			s.log = l.With(zap.String("service", s.name), zap.String("service_uuid", s.uuid))
			defer func() { _ = l.Sync() }()
		}
	}
	sigCtx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	startCtx, cancel := context.WithTimeout(sigCtx, s.cfg.startTimeout)
	err := s.Start(startCtx)
	cancel()
	if err != nil {
		// An OnStarted hook that failed leaves the service running: stop
		// what Start spawned, so Run never returns with actors running.
		// (After any other failure Start stopped it already; Stop is then
		// a no-op.)
		stopCtx, cancelStop := context.WithTimeout(context.Background(), s.cfg.drainTimeout+15*time.Second)
		defer cancelStop()
		return &RunError{Code: ExitStartFailed, Err: errors.Join(err, s.Stop(stopCtx))}
	}

	var fatal error
	select {
	case <-sigCtx.Done():
		s.log.Info("shutting down", zap.String("cause", fmt.Sprint(context.Cause(sigCtx))))
	case <-s.failed:
		fatal = s.Err()
	}
	// From here a second signal gets Go's default handling: exit now.
	stopSignals()

	stopCtx, cancelStop := context.WithTimeout(context.Background(), s.cfg.drainTimeout+15*time.Second)
	defer cancelStop()
	stopErr := s.Stop(stopCtx)
	switch {
	case fatal != nil:
		return &RunError{Code: ExitFailed, Err: errors.Join(fatal, stopErr)}
	case stopErr != nil:
		return &RunError{Code: ExitStopIncomplete, Err: stopErr}
	}
	return nil
}

// Main runs the service with Run and exits the process with ExitCode.
func Main(s *Service) {
	err := s.Run(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", s.name, err)
	}
	os.Exit(ExitCode(err))
}

// Command retrynode is a forwarder for the delayed-retry check: it
// subscribes to RETRY_IN on the fixed queue RETRY_QUEUE, fails every
// message's first delivery and forwards its retries to RETRY_OUT, with
// one delayed retry of 5 s. AMQP_URL is the broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hato-go/hato"
)

func main() {
	svc, err := hato.New("retrynode", hato.WithURL(os.Getenv("AMQP_URL")),
		hato.FailureHandling(hato.FailurePolicy{RetryDelays: []time.Duration{5 * time.Second}}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(hato.ExitStartFailed)
	}
	out := os.Getenv("RETRY_OUT")
	_ = hato.Subscribe(svc, os.Getenv("RETRY_IN"), func(ctx context.Context, m *hato.Message[any]) error {
		if m.Retry == 0 {
			return errors.New("first delivery fails")
		}
		return svc.Publish(ctx, m.Data, out)
	}, hato.QueueName(os.Getenv("RETRY_QUEUE")))
	err = svc.Run(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(hato.ExitCode(err))
}

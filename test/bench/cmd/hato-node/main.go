// Command hato-node is examples/amqp-example (the same service, the same
// options) plus the profiles of test/bench/internal/prof, written when
// HATO_CPUPROFILE, HATO_BLOCKPROFILE or HATO_MUTEXPROFILE name a file:
// `go run ./test/bench -mode process -profile DIR` runs it instead of the
// example. HATO_GAPS=1 reports how long the handler goroutine waits
// between messages (test/bench/internal/prof.Gaps).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/bench/internal/prof"
)

func main() {
	stopProf := prof.Start()
	svc, err := hato.New("amqp-example")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gaps := prof.NewGaps() // HATO_GAPS: handler start/return times
	_ = hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
		gaps.Enter()
		defer gaps.Exit()
		return svc.Publish(ctx, msg.Data, "example.response")
	}, hato.HandlerName("example_func"))
	err = svc.Run(context.Background())
	stopProf()
	gaps.Report(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "amqp-example:", err)
	}
	os.Exit(hato.ExitCode(err))
}

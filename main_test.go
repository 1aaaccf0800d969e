package hato_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/hato-go/hato/test/brokertest"
	"github.com/hato-go/hato/test/leak"
)

// amqpURL is this package's own vhost on the test broker.
var (
	amqpURL string
	vhost   string
)

func TestMain(m *testing.M) {
	url, cleanup, err := brokertest.SetupVhost("hato")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	amqpURL = url
	vhost = vhostOf(url)
	code := m.Run()
	cleanup()
	if code == 0 {
		if err := goleak.Find(leak.Options()...); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak after all tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

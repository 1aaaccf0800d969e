package hato_test

import (
	"testing"

	"github.com/hato-go/hato/test/brokertest"
	"github.com/hato-go/hato/test/leak"
)

// amqpURL is this package's own vhost on the test broker.
var (
	amqpURL string
	vhost   string
)

func TestMain(m *testing.M) {
	brokertest.Main(m, "hato", func(url string) { amqpURL, vhost = url, vhostOf(url) }, leak.Find)
}

//go:build integration

package integration_test

import (
	"testing"

	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's own vhost on the test broker, created when the
// first test asks for it (brokerURL, brokerVhost).
var pkgVhost = brokertest.NewPackageVhost("integration")

func TestMain(m *testing.M) {
	brokertest.Main(m, pkgVhost, leak.Find)
}

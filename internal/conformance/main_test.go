package conformance_test

import (
	"testing"

	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's vhost on the test broker, created only when
// the broker run asks for it: the in-memory run needs no broker.
var pkgVhost = brokertest.NewPackageVhost("conformance")

func TestMain(m *testing.M) {
	brokertest.Main(m, pkgVhost, leak.Find)
}

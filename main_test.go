package hato_test

import (
	"testing"

	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's own vhost on the test broker, created when the
// first test asks for it (pkgVhost.URL, pkgVhost.Name), so the unit tests run
// without a broker.
//
// Two layers: files whose tests need the broker start with
// `//go:build integration`; the others (options_test.go, example_test.go,
// ...) are the unit layer, which plain `go test ./...` runs (`make
// test-unit` with an unreachable broker, so a unit test that touches the
// broker fails). `make test` runs the unit layer, then everything with
// -tags integration against the broker.
var pkgVhost = brokertest.NewPackageVhost("hato")

func TestMain(m *testing.M) {
	brokertest.Main(m, pkgVhost, leak.Find)
}

package broker

import (
	"strings"
	"testing"

	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's vhost on the test broker, created when the
// first test asks for it (brokerURL): the tests in files without
// `//go:build integration` need no broker.
var pkgVhost = brokertest.NewPackageVhost("broker")

func TestMain(m *testing.M) {
	brokertest.Main(m, pkgVhost, leak.Find)
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

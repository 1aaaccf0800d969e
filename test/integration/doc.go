// Package integration holds hato's broker scenarios: whole services against
// the real RabbitMQ (lifecycle, routing, bad input, failure handling,
// clusters, observability), one test file per concern. Its tests are built
// with -tags integration (`make test`); without the tag the package has no
// tests. The unit tests, the examples and the tests that need the root
// package's own hooks (export_test.go) stay beside the code in the
// repository root.
package integration

//go:build unit

package brokertest

// unitLayer: built with -tags unit, the test layer that runs without a
// broker (`make test-unit`).
const unitLayer = true

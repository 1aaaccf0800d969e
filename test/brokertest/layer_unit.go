//go:build !(integration || faults || cluster)

package brokertest

// unitLayer: true without -tags integration (or faults, cluster): plain
// `go test ./...` (`make test-unit`) is the unit layer, which runs without a
// broker.
const unitLayer = true

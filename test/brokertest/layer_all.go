//go:build integration || faults || cluster

package brokertest

// unitLayer: false when built with -tags integration (or faults, cluster),
// the layers that talk to the broker; true otherwise: plain `go test ./...`
// (`make test-unit`) is the unit layer, which runs without a broker.
const unitLayer = false

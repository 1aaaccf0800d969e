// Package faults is hato's fault-injection suite. Every scenario runs
// against the real RabbitMQ: it publishes thousands of messages with ids
// through hato, injects a fault under load (handler panics, killed actors,
// poison messages, closed connections, a broker restart, a network cut, a
// killed node, a memory alarm), and accounts for every message: confirmed
// publishes, handled ids, lost (confirmed but never handled: must be 0),
// duplicates (allowed, counted), messages left in the queue at the end (must
// be 0) and the time to recover.
//
// The tests are behind the "faults" build tag because some disrupt the
// whole broker; run them with `make test-faults` (which `make test` runs
// after the other packages). Broker-wide faults take brokertest's exclusive
// cross-process lock and always restore the broker.
package faults

// Package brokertest contains helpers for integration tests that talk to a
// REAL RabbitMQ broker (3.10+).
//
// The broker is never optional: when it is missing the helpers fail the test
// with an actionable message ("run `scripts/rabbitmq.sh ensure`"); they never
// skip.
//
// # Configuration
//
//   - HATO_TEST_AMQP_URL: base AMQP URL, default amqp://guest:guest@127.0.0.1:5672/.
//   - HATO_TEST_RABBITMQCTL: rabbitmqctl executable (default: "rabbitmqctl"
//     from PATH). Point it at a wrapper script to reach a broker in a
//     container, e.g. `exec docker exec rabbit rabbitmqctl "$@"`.
//   - HATO_TEST_PG_URL: the PostgreSQL of the dedupe/pgstore and
//     outbox/pgoutbox tests (PostgresURL, PostgresSchema), default
//     postgres://hato:hato@127.0.0.1:5432/hato_test (scripts/postgres.sh ensure).
//   - HATO_TEST_BROKER_LOCK=off disables the cross-process broker lock (see
//     below); HATO_TEST_BROKER_LOCK_DIR moves its files (default $TMPDIR).
//
// # Isolation
//
// Every test (NewVhost) or test package (SetupVhost from TestMain) should work
// in its own throw-away virtual host, so parallel test processes never see
// each other's queues and exchanges. Creating a vhost costs two rabbitmqctl
// calls (~1–2 s), deleting one another; prefer one vhost per package plus
// unique queue names per test when a package has many tests:
//
//	var pkgVhost = brokertest.NewPackageVhost("mypkg")
//
//	func TestMain(m *testing.M) { brokertest.Main(m, pkgVhost, leak.Find) }
//
//	func TestPublish(t *testing.T) {
//		url := pkgVhost.URL(t) // creates the vhost on first use
//		...
//	}
//
// The vhost is created only when a test asks for it, so the tests of the
// package that need no broker run without one. Files whose tests need the
// broker start with `//go:build integration`: plain `go test ./...` (`make
// test-unit`) runs the rest, the unit layer, and `go test -tags integration
// ./...` (`make test`) runs both. SetupVhost does the same for
// a TestMain of its own.
//
// # Inspection
//
// ListQueues, ListExchanges and ListConnections run rabbitmqctl (slow, ~1 s,
// but they see everything, including arguments and client-provided
// connection names). Inspect / InspectQueue use an AMQP passive declare and
// take about a millisecond; prefer them inside polling loops.
//
// # Fault injection and the broker lock
//
// StopApp/StartApp and SetMemoryWatermark change the state of the whole
// broker, which would break tests of other packages that `go test ./...` runs
// concurrently in other processes. To prevent that the helpers coordinate
// through a file lock (flock on $TMPDIR/hato-brokertest-<host_port>.lock):
// every process that uses the broker through this package (Require, Dial,
// NewVhost, SetupVhost, Rabbitmqctl, ...) holds a shared lock until it exits,
// and a fault helper waits for an exclusive lock first. So fault tests simply
// wait until the other test processes are finished, and other processes wait
// while a fault test runs. Within one process nothing is serialized: fault
// tests must not use t.Parallel, and other tests of the same package must not
// run in parallel with them.
//
// Fault helpers always restore the broker in t.Cleanup (which also runs when
// the test fails or panics). As a last resort against a killed test binary
// (e.g. `go test -timeout`), they additionally start a detached watchdog
// process that restores the broker after WatchdogDelay unless the cleanup
// cancelled it first. `scripts/rabbitmq.sh ensure` also restarts an app left
// stopped.
//
// # Waiting
//
// Never sleep in tests: use WaitFor (or Eventually outside of tests), which
// polls every 10 ms.
package brokertest

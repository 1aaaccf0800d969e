// Package clustertest runs a throw-away RabbitMQ cluster on loopback for
// tests that need more than one broker node (kill a node, fail over to
// another, quorum queues).
//
// The cluster is separate from the default test broker (127.0.0.1:5672,
// see package brokertest), which it never touches: scripts/cluster.sh starts
// 3 extra nodes (hato-c1@localhost .. hato-c3@localhost, AMQP on
// 127.0.0.1:5681..5683, guest/guest) with their own Erlang cookie, config,
// data and log directories under $TMPDIR/hato-cluster, and clusters them with
// rabbitmqctl join_cluster. Starting takes about 15 s and each node needs
// about 130 MB of memory, so a test package starts one cluster and its tests
// share it.
//
// RabbitMQ (rabbitmq-server, 3.10+) must be installed; the default broker
// need not run. When the cluster cannot start, [Start] fails the test with the
// script's output; it never skips.
//
// # Nodes
//
// Nodes are numbered from 0 in this package: node i is [Cluster.Name](i) at
// [Cluster.URL](i), and scripts/cluster.sh's node i+1.
//
// # Isolation and cleanup
//
// Only one cluster can run on a machine at a time (fixed ports), so [Start]
// holds a flock on $TMPDIR/hato-cluster.lock from start to stop: a second
// test process waits for the first one's cluster to be stopped. [Start]
// registers [Cluster.Stop] with t.Cleanup, so the cluster is removed even when
// the test fails. A detached watchdog (scripts/cluster.sh reap-after) stops
// it if the test binary is killed before its cleanup runs (go test -timeout).
//
// # Configuration
//
//   - HATO_CLUSTER_DIR: base directory (default $TMPDIR/hato-cluster); the
//     lock file is the same path plus ".lock".
//   - HATO_CLUSTER_NODES, HATO_CLUSTER_PORT_BASE, HATO_CLUSTER_DIST_BASE,
//     HATO_CLUSTER_NAME, HATO_CLUSTER_HOST: see scripts/cluster.sh.
package clustertest

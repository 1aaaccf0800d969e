#!/usr/bin/env bash
# `make run`: start the amqp-example node, then the demo client that sends it
# a message every second and prints the responses. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/amqp-example ./examples/amqp-example
go build -o bin/amqp-demo ./examples/amqp-demo

# The node runs in its own process group (set -m): Ctrl-C reaches the demo
# only, and cleanup stops the node with one SIGTERM. A second signal would
# end it at once, before it flushes its last spans and metrics.
set -m
./bin/amqp-example 2> >(sed 's/^/[amqp-example] /' >&2) &
node=$!
set +m
cleanup() {
	kill -TERM "$node" 2>/dev/null || true
	wait "$node" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "amqp-example node started (pid $node); demo client publishing to example.topic every second. Ctrl-C to stop."
# HATO_OPS_ADDR is the node's: the demo client, a hato service too, would
# otherwise take the same address first and the node fail to start.
env -u HATO_OPS_ADDR ./bin/amqp-demo "$@"

#!/usr/bin/env bash
# `make run`: start the amqp-example node, then the demo client that sends it
# a message every second and prints the responses. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/amqp-example ./examples/amqp-example
go build -o bin/amqp-demo ./examples/amqp-demo

./bin/amqp-example 2> >(sed 's/^/[amqp-example] /' >&2) &
node=$!
cleanup() {
	kill -TERM "$node" 2>/dev/null || true
	wait "$node" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "amqp-example node started (pid $node); demo client publishing to example.topic every second. Ctrl-C to stop."
./bin/amqp-demo "$@"

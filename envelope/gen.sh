#!/usr/bin/env bash
# Regenerates the Go code of envelope's .proto files (committed; run after
# editing a .proto): the SNSSQSMessage schema in internal/pb and the Person
# test fixture in internal/testpb (shared by the tests of several packages). Run from anywhere: `bash envelope/gen.sh`.
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12 # keep equal to google.golang.org/protobuf in go.mod

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! command -v protoc >/dev/null 2>&1; then
	echo "gen.sh: protoc not found; install it: apt-get install -y protobuf-compiler" >&2
	exit 1
fi

gobin="$(go env GOBIN)"
if [ -z "$gobin" ]; then
	gobin="$(go env GOPATH)/bin"
fi
plugin="$gobin/protoc-gen-go"
if [ ! -x "$plugin" ] || ! "$plugin" --version 2>/dev/null | grep -qF "$PROTOC_GEN_GO_VERSION"; then
	echo "gen.sh: installing protoc-gen-go $PROTOC_GEN_GO_VERSION into $gobin" >&2
	GOBIN="$gobin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi

# Paths relative to the repository root become the files' registered names,
# which keeps them unique in the global protobuf registry.
protoc \
	--plugin=protoc-gen-go="$plugin" \
	--proto_path=. \
	--go_out=. \
	--go_opt=paths=source_relative \
	envelope/internal/pb/sns_sqs_message.proto \
	internal/testpb/person.proto

echo "gen.sh: regenerated envelope/internal/pb and internal/testpb" >&2

# hato — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
GOLANGCI_LINT_VERSION ?= v2.15.0
# Fuzz time per target for `make fuzz` (CI only runs the seed corpus).
FUZZTIME ?= 60s

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: broker
broker: ## Make sure RabbitMQ runs (start it, or install it with apt-get).
	@bash scripts/rabbitmq.sh ensure

.PHONY: run
run: broker ## Run the example node and a demo client that drives it (Ctrl-C stops both).
	@bash scripts/run-example.sh

.PHONY: test
test: broker vet ## Run every test with -race against the real broker, then the fault suite.
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) --no-print-directory test-faults
	$(MAKE) --no-print-directory test-cluster

.PHONY: test-faults
test-faults: broker ## Run the fault-injection suite (disrupts the broker; restores it) and print its table.
	$(GO) test -race -count=1 -tags faults -timeout 20m -run 'TestFaults' -v ./test/faults/ 2>&1 | tee /tmp/hato-faults.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\||panic|    faults_test)' ; exit $${PIPESTATUS[0]}

.PHONY: test-cluster
test-cluster: broker ## Run the cluster scenarios on a throw-away 3-node cluster (scripts/cluster.sh; ~15 s start, ~130 MB a node).
	$(GO) test -race -count=1 -v ./test/clustertest/

.PHONY: bench
bench: broker ## Benchmarks: hato vs a hand-written amqp091-go service, and envelope codecs.
	$(GO) run ./test/bench
	$(GO) test -run '^$$' -bench . -benchmem ./envelope/

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 60s).
	@for pkg in ./envelope/ ./broker/; do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; \
	done

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...
	$(GO) vet -tags faults ./test/faults/

.PHONY: lint
lint: ## golangci-lint with .golangci.yml (fetched with go run).
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./...

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: proto
proto: ## Regenerate the protobuf Go code (needs protoc: apt-get install protobuf-compiler).
	bash envelope/gen.sh

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

# Two test layers. A test file that needs RabbitMQ (or Redis, PostgreSQL)
# starts with `//go:build integration`; every other test is the unit layer:
# plain `go test ./...`, which `make test-unit` runs with an address where no
# broker listens (and a rabbitmqctl that always fails), so a unit test that
# reaches for the broker fails instead of quietly using one. Broker tests create their package's
# vhost only when they first need it (test/brokertest.PackageVhost).
UNIT_ENV := HATO_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:1/ HATO_TEST_RABBITMQCTL=/bin/false

.PHONY: test
test: test-unit broker ## Unit layer, then every test (-tags integration) with -race against the real broker, then the fault, cluster and fleet suites.
	$(GO) test -race -count=1 -tags integration -timeout 15m ./...
	$(MAKE) --no-print-directory test-faults
	$(MAKE) --no-print-directory test-cluster
	$(MAKE) --no-print-directory test-fleet

# Modules with their own go.mod (drivers the core module must not require);
# `go test ./...` at the root does not descend into them.
FLEET_MODULES := dedupe/redisstore dedupe/pgstore outbox/pgoutbox examples/outbox

.PHONY: redis
redis: ## Make sure Redis runs (start it, or install it with apt-get).
	@bash scripts/redis.sh ensure

.PHONY: postgres
postgres: ## Make sure PostgreSQL runs with the test role and database (start/install it, create them).
	@bash scripts/postgres.sh ensure

.PHONY: test-fleet
test-fleet: broker redis postgres ## Dedupe stores (Redis, PostgreSQL) and the outbox against the real servers, with the crash tests.
	@for m in $(FLEET_MODULES); do \
	  echo "== $$m"; (cd $$m && $(GO) vet ./... && $(GO) vet -tags integration ./... && $(GO) test -race -count=1 -tags integration -timeout 10m ./...) || exit 1; \
	done

.PHONY: bench-outbox
bench-outbox: broker postgres redis ## Outbox relay throughput and commit-to-confirm latency vs Service.Publish; dedupe stores' cost per message vs in-memory.
	cd outbox/pgoutbox && $(GO) test -tags integration -run '^$$' -bench Outbox -benchtime 2000x -timeout 10m .
	cd dedupe/redisstore && $(GO) test -tags integration -run '^$$' -bench Dedupe -benchtime 2000x -timeout 10m .
	cd dedupe/pgstore && $(GO) test -tags integration -run '^$$' -bench Dedupe -benchtime 2000x -timeout 10m .

.PHONY: test-unit
test-unit: vet ## Tests that need no broker (plain go test, no tag), with -race and the broker unreachable.
	$(UNIT_ENV) $(GO) test -race -count=1 -timeout 10m ./...

# Seeds for `make sim` (the unit layer runs 3000 consumer and 500 connection seeds; see DESIGN.md, Simulation).
SEEDS ?= 30000

.PHONY: sim
sim: ## Run the consumer and connection simulations over SEEDS seeds each (default 30000), with -race; replay one with HATO_SIM_SEED=n.
	$(UNIT_ENV) HATO_SIM_SEEDS=$(SEEDS) HATO_SIM_CONN_SEEDS=$(SEEDS) $(GO) test -race -count=1 -timeout 60m -run '^TestSimulation(Connection)?$$' -v ./actors/ 2>&1 | grep -E '^(---|ok|FAIL|PASS|panic)|sim(_conn)?_test.go' ; exit $${PIPESTATUS[0]}

.PHONY: test-faults
test-faults: broker ## Run the fault-injection suite (disrupts the broker; restores it) and print its table.
	$(GO) test -race -count=1 -tags faults -timeout 20m -run 'TestFaults' -v ./test/faults/ 2>&1 | tee /tmp/hato-faults.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\||panic|    faults_test)' ; exit $${PIPESTATUS[0]}

.PHONY: test-cluster
test-cluster: broker ## Run the cluster scenarios on a throw-away 3-node cluster (scripts/cluster.sh; ~15 s start, ~130 MB a node), and the consumer_timeout test on a throw-away node.
	$(GO) test -race -count=1 -tags cluster -timeout 15m -v ./internal/clustertest/
	$(GO) test -race -count=1 -tags 'integration cluster' -timeout 10m -run TestConsumerTimeoutSlowHandler -v ./test/integration/

.PHONY: bench
bench: broker ## Benchmarks (~5 min): hato vs a hand-written amqp091-go service in one process (tracing off / propagation / recording SDK) and across processes, the route pipeline's allocations, telemetry cost, envelope codecs.
	$(GO) run ./test/bench
	$(GO) run ./test/bench -mode process
	$(GO) test -tags integration -run '^$$' -bench ForwardPipeline -benchmem -benchtime 20000x ./test/bench/
	$(GO) test -run '^$$' -bench Telemetry -benchmem -count 3 .
	$(GO) test -run '^$$' -bench . -benchmem ./envelope/

.PHONY: bench-routes
bench-routes: broker ## Many routes: a node with ROUTES (10000) routes in its own process: time to ready, RSS per idle route, latency at 0.1 msg/s a route.
	$(GO) run ./test/bench -mode routes -routes $(or $(ROUTES),10000)

.PHONY: bench-ceiling
bench-ceiling: broker ## Library ceiling: 64 goroutines publishing vs hand-written deferred confirms; Concurrency(32) with a 5 ms handler vs 32/5 ms.
	$(GO) run ./test/bench -mode ceiling -rounds 3

.PHONY: bench-soak
bench-soak: broker ## Memory under load: the example node forwarding 2000 msg/s for SOAK (10m), RSS sampled every 10 s.
	$(GO) run ./test/bench -mode soak -duration $(or $(SOAK),10m)

.PHONY: bench-doc
bench-doc: ## Render docs/benchmarks.md and the README's headline figures from test/bench/results/*.json (go run ./test/bench -json FILE writes one).
	$(GO) run ./test/bench/cmd/benchdoc

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 60s).
	@for pkg in ./envelope/ ./broker/; do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg || exit 1; \
	  done; \
	done

.PHONY: cli
cli: ## Build the hato command into ./bin/hato.
	$(GO) build -o bin/hato ./cmd/hato

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	$(GO) vet -tags faults ./test/faults/
	$(GO) vet -tags cluster ./internal/clustertest/

.PHONY: lint
lint: ## golangci-lint with .golangci.yml (fetched with go run).
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) run ./...

.PHONY: shape
shape: ## Function complexity/length offenders (cx>15, >60 lines) and exported identifiers per package.
	$(GO) run ./scripts/shape -over 15 -lines 60 -exported

.PHONY: fmt
fmt: ## gofmt the tree.
	gofmt -w $$(git ls-files '*.go')

.PHONY: proto
proto: ## Regenerate the protobuf Go code (needs protoc: apt-get install protobuf-compiler).
	bash envelope/gen.sh

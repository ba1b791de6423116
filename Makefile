# meshetcd — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./internal/... ./mesh/... ./meshconn/... ./raftnode/... ./kvstore/... ./grpcapi/... ./embed/...

.PHONY: all build run etcdctl test test-unit test-integration test-diff bench soak fuzz clean

all: build

## build: bin/meshetcd (-buildvcs=auto stamps the git commit that --version prints)
build:
	$(GO) build -buildvcs=auto -o $(BIN)/meshetcd ./cmd/meshetcd

## run: start a single-member server on etcd's defaults (clients on 127.0.0.1:2379)
run: build
	$(BIN)/meshetcd

## etcdctl: build etcd's own etcdctl 3.7.3 into bin/ (never committed)
etcdctl:
	cd tools/etcdctl && $(GO) build -o $(BIN)/etcdctl .

## etcd, benchmark-tool: etcd 3.7.3 server and etcd's benchmark tool into bin/ for `make bench` (rebuilt only when tools/etcd or tools/benchmark change)
.PHONY: etcd benchmark-tool
etcd benchmark-tool:
	@$(MAKE) --no-print-directory -f bench/bench.mk $@

## test: vet, unit tests (race detector on concurrent packages), integration tests
test: build etcdctl test-unit test-integration

test-unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 5m ./cmd/... ./scripts/...

test-integration: build etcdctl
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl $(GO) test -count=1 -timeout 15m ./integration/...

## test-diff: build etcd 3.7.3 (bin/etcd) and run the differential tests live: the clientv3 KV
## suites and the etcdctl transcript against both servers (`make test` compares with the
## recorded etcd transcript, and runs these live too whenever bin/etcd already exists)
test-diff: build etcdctl etcd
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl $(GO) test -count=1 -timeout 15m \
		-run 'TestEtcdctlMatchesEtcd|TestKV|TestBadInputKeepsServing|TestClientCertCNAsUserMatchesEtcd|TestClientTLSBadInput' -v ./integration/

## bench: side-by-side throughput/latency against etcd 3.7.3 (see bench/)
bench: build
	@if [ -f bench/bench.mk ]; then $(MAKE) -f bench/bench.mk bench; else $(GO) test -run '^$$' -bench . -benchmem ./...; fi

## soak: long randomized fault runs, not part of `make test`: random kill/pause/partition/link cuts
## under a porcupine linearizability check (also against etcd when bin/etcd exists), random
## connected topologies (root: network namespaces), a ≥50 MiB snapshot catch-up.
## Each randomized test runs SOAK_DURATION (default 10m) and logs its seed and figures.
SOAK_DURATION ?= 10m
soak: build etcdctl
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl MESHETCD_SOAK=1 MESHETCD_SOAK_DURATION=$(SOAK_DURATION) \
		$(GO) test -count=1 -timeout 120m -v -run Soak ./integration/...

## fuzz: run each fuzz target for a while (FUZZTIME=30s); the seed corpora already run in `make test`
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$(grep -rl '^func Fuzz' --include='*_test.go' . | xargs -n1 dirname | sort -u); do \
		for t in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$pkg $$t"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

clean:
	rm -rf $(BIN) default.meshetcd

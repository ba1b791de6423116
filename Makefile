# meshetcd — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Packages with goroutines and shared state run under the race detector.
RACE_PKGS := ./internal/... ./mesh/... ./meshconn/... ./peer/... ./raftnode/... ./kvstore/... ./grpcapi/... ./embed/... ./meshview/...

.PHONY: all build run etcdctl etcdutl test test-unit test-integration test-diff bench soak fuzz clean check-imports stress-blackhole false-deaths

all: build

## build: bin/meshetcd (-buildvcs=auto stamps the git commit that --version prints)
build:
	$(GO) build -buildvcs=auto -o $(BIN)/meshetcd ./cmd/meshetcd

## release: static binaries (CGO off) for linux/amd64 and linux/arm64 in dist/, with SHA256SUMS;
## VERSION (default: embed/version.go's) is stamped into --version and /version
VERSION ?= $(shell sed -n 's/^var Version = "\(.*\)"/\1/p' embed/version.go)
RELEASE_PLATFORMS := linux/amd64 linux/arm64
.PHONY: release
release:
	rm -rf dist && mkdir -p dist
	@for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; echo "building dist/meshetcd-$$os-$$arch ($(VERSION))"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto \
			-ldflags "-s -w -X github.com/meshetcd/meshetcd/embed.Version=$(VERSION)" \
			-o dist/meshetcd-$$os-$$arch ./cmd/meshetcd || exit 1; \
	done
	cd dist && sha256sum meshetcd-* > SHA256SUMS && cat SHA256SUMS

## run: start a single-member server on etcd's defaults (clients on 127.0.0.1:2379)
run: build
	$(BIN)/meshetcd

## etcdctl: build etcd's own etcdctl 3.7.3 into bin/ (never committed)
etcdctl:
	cd tools/etcdctl && $(GO) build -o $(BIN)/etcdctl .

## etcdutl: build etcd's own etcdutl 3.7.3 into bin/ (offline snapshot status/restore, defrag; never committed)
etcdutl:
	cd tools/etcdutl && $(GO) build -o $(BIN)/etcdutl .

## etcd, benchmark-tool: etcd 3.7.3 server and etcd's benchmark tool into bin/ for `make bench` (rebuilt only when tools/etcd or tools/benchmark change)
.PHONY: etcd benchmark-tool
etcd benchmark-tool:
	@$(MAKE) --no-print-directory -f bench/bench.mk $@

## test: vet, unit tests (race detector on concurrent packages), integration tests
test: build etcdctl etcdutl etcd test-unit test-integration

test-unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 5m ./cmd/... ./bench/... ./scripts/...

## check-imports: the import rules (go list -deps): kvstore and raftnode never reach mesh/meshconn/peer,
## the binary links no test doubles (mesh/memnet, embed/embedtest); also part of test-unit (./internal/...)
check-imports:
	$(GO) test -count=1 -run TestImportRules ./internal/archtest/

# etcd 3.7.3 (bin/etcd) is built for the differential, metric-name and migration tests.
test-integration: build etcdctl etcdutl etcd chromium nftables
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl ETCDUTL_BIN=$(BIN)/etcdutl $(GO) test -count=1 -timeout 20m ./integration/...

## nftables: Debian's nftables for the hostile-link tests in network namespaces (loss, one-way,
## rate limit, the delay relay's DNAT; this kernel has no netem); installed with apt-get when missing
.PHONY: nftables
nftables:
	@integration/scripts/install-debian.sh nft nftables "the hostile-link tests in network namespaces"

## chromium: Debian's chromium for the mesh page browser test (installed with apt-get when missing; needs root)
.PHONY: chromium
chromium:
	@integration/scripts/install-debian.sh chromium chromium "the mesh page browser test"

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
## Each randomized test runs SOAK_DURATION (default 10m) and logs its seed and figures; the fault
## schedules, fenced locks, link shapes and stale-read rounds run their long variants.
SOAK_DURATION ?= 10m
soak: build etcdctl nftables
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl MESHETCD_SOAK=1 MESHETCD_SOAK_DURATION=$(SOAK_DURATION) \
		$(GO) test -count=1 -timeout 180m -v -run 'Soak|TestFencedLock|TestPartialLinkShapes|TestNoStaleReadAfterRestart' ./integration/...

## stress-blackhole: the in-process triangle blackhole test STRESS_COUNT (50) times under full CPU
## load (a spinning goroutine per core); any write stall of 2 s or more fails it. Not in `make test`.
STRESS_COUNT ?= 50
stress-blackhole: build etcdctl
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl MESHETCD_CPU_BURN=1 \
		$(GO) test -count=$(STRESS_COUNT) -timeout 90m -v -run 'TestPartialInProcessTriangleBlackhole$$' ./integration/

## false-deaths: three in-process members, no fault, every core busy for FALSE_DEATHS_DURATION (10m);
## counts mesh links lost (false deaths, goal 0). Not in `make test`.
FALSE_DEATHS_DURATION ?= 10m
false-deaths: build etcdctl
	MESHETCD_BIN=$(BIN)/meshetcd ETCDCTL_BIN=$(BIN)/etcdctl MESHETCD_FALSE_DEATHS_DURATION=$(FALSE_DEATHS_DURATION) \
		$(GO) test -count=1 -timeout 90m -v -run 'TestFalseLinkDeathsUnderCPULoad$$' ./integration/

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
	rm -rf $(BIN) default.meshetcd dist

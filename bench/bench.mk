# bench/bench.mk: side-by-side benchmark of meshetcd against etcd 3.7.3 (see bench/README.md).
# The top-level Makefile delegates `make bench`, `make etcd` and `make benchmark-tool` here;
# run from the repository root: `make -f bench/bench.mk <target>`.
#
#   make bench QUICK=1            ~2-3 min smoke run (3 rounds, ~2.5 s per workload run)
#   make bench                    full run (5 rounds, ~8 s per run; ~12-15 min on 2 cores)
#   make bench PROFILE=1          + CPU/heap profiles of each system under put-100 (or the one
#                                 workload in WORKLOADS; PROFILE_WORKLOAD=txn-put to choose)
#   make bench MEMBERS=3          3-member clusters (skipped if meshetcd cannot form one)
#   make bench MEMBERS=1,3        one run per cluster size
#   make -f bench/bench.mk bench-self QUICK=1   etcd against etcd: every ratio should be ~1
#   make bench GROWTH=1           + growth workloads: 64 KiB / 1 MiB values, 1 key vs 1 M keys,
#                                 10 vs 10,000 watchers on one key (bench/README.md "Growth")
#   make bench TLS=1              client TLS variant: https:// client URLs with the same generated
#                                 certificates for both servers (mutual TLS), the tool with --cacert/--cert/--key
GO  ?= go
BIN := $(CURDIR)/bin

ETCD_BIN      ?= $(BIN)/etcd
MESHETCD_BIN  ?= $(BIN)/meshetcd
BENCHMARK_BIN ?= $(BIN)/benchmark
DRIVER        := $(BIN)/sidebyside

truthy = $(filter 1 y yes true on,$(1))
comma := ,

QUICK     ?=
PROFILE   ?=
MEMBERS   ?= 1
ROUNDS    ?=
DURATION  ?=
WORKLOADS ?=
PROFILE_WORKLOAD ?=
TLS       ?=
GROWTH    ?=
BENCH_FLAGS ?=

SIDEBYSIDE_FLAGS := --etcd-bin $(ETCD_BIN) --benchmark-bin $(BENCHMARK_BIN) --go $(GO) \
	$(if $(call truthy,$(QUICK)),--quick) $(if $(call truthy,$(PROFILE)),--profile) \
	$(if $(call truthy,$(TLS)),--tls) $(if $(call truthy,$(GROWTH)),--growth) \
	$(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(WORKLOADS),--workloads $(WORKLOADS)) \
	$(if $(PROFILE_WORKLOAD),--profile-workload $(PROFILE_WORKLOAD)) $(BENCH_FLAGS)

.PHONY: bench bench-self etcd benchmark-tool bench-driver

## bench: etcd vs meshetcd; tables in bench/results/<timestamp>/ (bench/results/latest)
bench: etcd benchmark-tool bench-driver
	@test -x $(MESHETCD_BIN) || { echo "$(MESHETCD_BIN) missing: run make build"; exit 1; }
	@set -e; for m in $(subst $(comma), ,$(MEMBERS)); do \
		echo "$(DRIVER) $(SIDEBYSIDE_FLAGS) --members $$m --meshetcd-bin $(MESHETCD_BIN)"; \
		$(DRIVER) $(SIDEBYSIDE_FLAGS) --members $$m --meshetcd-bin $(MESHETCD_BIN); done

## bench-self: etcd vs etcd, to check the harness (ratios ~1, spread = noise floor)
bench-self: etcd benchmark-tool bench-driver
	@set -e; for m in $(subst $(comma), ,$(MEMBERS)); do \
		echo "$(DRIVER) $(SIDEBYSIDE_FLAGS) --members $$m --meshetcd-bin $(ETCD_BIN)"; \
		$(DRIVER) $(SIDEBYSIDE_FLAGS) --members $$m --meshetcd-bin $(ETCD_BIN); done

# Binaries are rebuilt only when their sources change (never committed: bin/ is ignored).
etcd: $(BIN)/etcd
benchmark-tool: $(BIN)/benchmark
bench-driver: $(DRIVER)

$(BIN)/etcd: tools/etcd/main.go tools/etcd/go.mod tools/etcd/go.sum
	cd tools/etcd && $(GO) build -o $@ .

$(BIN)/benchmark: tools/benchmark/main.go tools/benchmark/go.mod tools/benchmark/go.sum
	cd tools/benchmark && $(GO) build -o $@ .

$(DRIVER): $(wildcard bench/cmd/sidebyside/*.go) go.mod go.sum
	$(GO) build -o $@ ./bench/cmd/sidebyside

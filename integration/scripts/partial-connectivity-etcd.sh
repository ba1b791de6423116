#!/bin/sh
# Runs the partial-connectivity topologies (A–C cut with A the leader; five
# members in a line with the leader at one end) against etcd 3.7.3 in network
# namespaces and prints the measured figures next to meshetcd's:
# per-member write stall, leaderless time, leader changes, writes; and the
# hostile link shapes (loss, one-way, delay, flapping, slow; needs nftables).
#
# Needs root and iproute2. Builds bin/etcd and bin/etcdctl when missing.
#   integration/scripts/partial-connectivity-etcd.sh            # etcd only
#   BOTH=1 integration/scripts/partial-connectivity-etcd.sh     # meshetcd too
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns)"; exit 1; }
command -v ip >/dev/null || { echo "needs ip (iproute2)"; exit 1; }
[ -x bin/etcd ] || make etcd
[ -x bin/etcdctl ] || make etcdctl
make build
only=1
[ "${BOTH:-0}" = 1 ] && only=0
MESHETCD_COMPARE_ETCD=1 MESHETCD_COMPARE_ETCD_ONLY=$only \
MESHETCD_BIN="$PWD/bin/meshetcd" ETCDCTL_BIN="$PWD/bin/etcdctl" MESHETCD_DIFF_ETCD_BIN="$PWD/bin/etcd" \
	go test -count=1 -timeout 20m -v -run 'TestPartial(TriangleCutLeaderLink|LineOfFiveLeaderAtEnd|LineOfFiveLeaderInMiddle|LinkShapes)$' ./integration/ 2>&1 |
	grep -E '^(=== RUN|--- |    partial_connectivity_test.go:.*during the cut|    partial_shapes_test.go:.*on m0–m2|PASS|FAIL|ok)'

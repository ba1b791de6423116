#!/bin/sh
# Installs Debian's nftables, which the hostile-link tests in network
# namespaces use for loss, one-way links, bandwidth limits and the delay
# relay's DNAT (this kernel has no netem), unless nft is already there.
# `make test-integration` and `make soak` run it first; the tests also run
# it themselves when nft is missing. Without root it only says those tests
# will skip.
set -eu
if command -v nft >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "nftables is not installed and we are not root: the hostile-link tests will skip" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y nftables

#!/bin/sh
# install-debian.sh COMMAND PACKAGE WHO: installs Debian's PACKAGE unless
# COMMAND is already on PATH. Tests that need a tool beyond Go call it (and
# `make test-integration` runs it first through `make chromium` and
# `make nftables`): chromium drives the mesh page test headless, nftables
# gives the hostile-link tests in network namespaces loss, one-way links,
# bandwidth limits and the delay relay's DNAT (this kernel has no netem).
# Without root it only says that WHO will skip.
set -eu
if [ $# -ne 3 ]; then
	echo "usage: $0 COMMAND PACKAGE WHO" >&2
	exit 2
fi
command=$1 package=$2 who=$3
if command -v "$command" >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "$package is not installed and we are not root: $who will skip" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "$package"

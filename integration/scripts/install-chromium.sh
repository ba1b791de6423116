#!/bin/sh
# Installs Debian's chromium, which the mesh page test (TestMeshPageInBrowser)
# drives headless, unless it is already there. `make test-integration` runs
# it first; the test also runs it itself when chromium is missing. Without
# root it only says the browser test will skip.
set -eu
if command -v chromium >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "chromium is not installed and we are not root: the mesh page browser test will skip" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y chromium

#!/usr/bin/env bash
# Installs what Switchboard needs (Debian 12 + Swift 6.3), builds it (release) and runs
# `switchboard serve` in the foreground on 127.0.0.1:8080 with its data in ./switchboard-data.
# Extra arguments go to `serve` (e.g. --port 9000). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
swift build -c release --product switchboard
exec .build/release/switchboard serve "$@"

#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs the Swift unit tests and the
# integration tests over real sockets (Python `websockets` as the independent client).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
VENV="${SWITCHBOARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-venv}"

swift build --build-tests
swift test --skip-build
SWITCHBOARD_BIN="$PWD/.build/debug/switchboard" "$VENV/bin/python" -m pytest -q -p no:cacheprovider Tests/Integration

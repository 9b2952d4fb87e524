#!/usr/bin/env bash
# Runs the unit tests and the integration tests under a sanitizer:
#   scripts/sanitize.sh address     AddressSanitizer (out-of-bounds, use-after-free)
#   scripts/sanitize.sh thread      ThreadSanitizer (data races between the loop, the store's
#                                   writer, the checkpointer and the log writer)
# Builds into .build-<sanitizer>/; prints the test summaries and any sanitizer report (reports
# of server processes started by the integration tests go to .build-<sanitizer>/reports/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
san="${1:?usage: scripts/sanitize.sh address|thread}"
scripts/install-deps.sh
VENV="${SWITCHBOARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-venv}"
B=".build-$san"
export SWIFT_BACKTRACE=enable=no
mkdir -p "$B/reports"
rm -f "$B"/reports/*
opts="log_path=$PWD/$B/reports/report"
[ "$san" = thread ] && export TSAN_OPTIONS="$opts halt_on_error=0"
# A small quarantine keeps memory figures (some tests bound the server's RSS) comparable.
[ "$san" = address ] && export ASAN_OPTIONS="$opts detect_leaks=0 quarantine_size_mb=16"
swift build --build-tests --sanitize="$san" --scratch-path "$B" 2>&1 | tail -1
status=0
swift test --skip-build --sanitize="$san" --scratch-path "$B" > "$B/unit.log" 2>&1 || status=1
grep -aE "Test run with|^error:" "$B/unit.log" | tail -3
SWITCHBOARD_BIN="$PWD/$B/debug/switchboard" "$VENV/bin/python" -m pytest -q -p no:cacheprovider Tests/Integration > "$B/integration.log" 2>&1 || status=1
grep -aE "passed|failed|^FAILED" "$B/integration.log" | tail -5
if ls "$B"/reports/report* >/dev/null 2>&1; then
  echo "sanitize: $san reports:"
  head -60 "$B"/reports/report*
  exit 1
fi
[ $status = 0 ] || { echo "sanitize: $san: tests failed (see $B/unit.log, $B/integration.log)"; exit 1; }
echo "sanitize: $san clean"

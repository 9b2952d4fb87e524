#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (../shared/tools/autobahn) against `switchboard echo` (release
# build, permessage-deflate on) and fails unless every case passes.
#   scripts/conformance.sh [CASES]      default: all cases, 1.* – 13.*
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CASES="${1:-*}"
AUTOBAHN="${AUTOBAHN_DIR:-$(cd .. && pwd)/shared/tools/autobahn}"
[ -x "$AUTOBAHN/run.sh" ] || { echo "conformance: no Autobahn tool at $AUTOBAHN" >&2; exit 1; }
scripts/install-deps.sh
swift build -c release --product switchboard
OUT="$(mktemp -d)"
.build/release/switchboard echo --host 127.0.0.1 --port 0 > "$OUT/echo.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
PORT=""
for _ in $(seq 1 100); do
  PORT="$(sed -n 's#.*listening on ws://127.0.0.1:\([0-9]*\)/.*#\1#p' "$OUT/echo.log")"
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$OUT/echo.log"; echo "conformance: echo server did not start" >&2; exit 1; }
AUTOBAHN_UNIMPLEMENTED_FAILS=1 AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}" "$AUTOBAHN/run.sh" 127.0.0.1 "$PORT" "$CASES" "$OUT/reports"

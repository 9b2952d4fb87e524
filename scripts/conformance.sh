#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (../shared/tools/autobahn) and fails unless every case passes.
#   scripts/conformance.sh [CASES]          the server: `switchboard echo` (release build,
#                                           permessage-deflate on); default all cases, 1.* – 13.*
#   scripts/conformance.sh client [CASES]   the SDK's WebSocket client (its fuzzing-server mode),
#                                           through `switchboard-autobahn-client`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=server
[ "${1:-}" = client ] && { MODE=client; shift; }
CASES="${1:-*}"
AUTOBAHN="${AUTOBAHN_DIR:-$(cd .. && pwd)/shared/tools/autobahn}"
[ -x "$AUTOBAHN/run.sh" ] || { echo "conformance: no Autobahn tool at $AUTOBAHN" >&2; exit 1; }
scripts/install-deps.sh
if [ "$MODE" = client ]; then
  swift build -c release --product switchboard-autobahn-client
  OUT="$(mktemp -d)"
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  AUTOBAHN_AGENT=switchboard AUTOBAHN_TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}" \
    "$AUTOBAHN/run-client.sh" "$PORT" "$CASES" "$OUT/reports" -- .build/release/switchboard-autobahn-client
  exit $?
fi
swift build -c release --product switchboard
OUT="$(mktemp -d)"
# The log exists before the server starts: the loop below may read it before the background
# shell has opened it.
: > "$OUT/echo.log"
.build/release/switchboard echo --host 127.0.0.1 --port 0 >> "$OUT/echo.log" 2>&1 &
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

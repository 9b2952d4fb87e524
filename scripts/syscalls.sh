#!/usr/bin/env bash
# The relay's system calls per relayed command under the shared load generator: starts the
# release build on loopback, attaches `strace -c -f` to it for one closed-loop run, and prints
# the file and socket calls divided by the commands relayed.
#   scripts/syscalls.sh            env: SESSIONS (1), PAYLOAD (256), SWITCHBOARD_STORE, BIN
# Run scripts/bench.sh once first (it builds the load generator under BENCH_DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK="${BENCH_DIR:-/tmp/switchboard-bench}"
LOADGEN="$WORK/loadgen/loadgen"
BIN="${BIN:-$PWD/.build/release/switchboard}"
[ -x "$LOADGEN" ] || { echo "syscalls: no load generator at $LOADGEN (run scripts/bench.sh once)" >&2; exit 1; }
[ -x "$BIN" ] || swift build -c release --product switchboard
command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
export SWITCHBOARD_RATE_PER_SECOND=10000000 SWITCHBOARD_RATE_BURST=10000000 SWITCHBOARD_RATE_BYTES_PER_SECOND=1099511627776
export SWITCHBOARD_RATE_BYTES_BURST=1099511627776 SWITCHBOARD_MAX_CONNECTIONS_PER_IP=1000000
PORT="${PORT:-21950}"
DATA=$(mktemp -d /tmp/switchboard-syscalls.XXXXXX)
OUT="$DATA/strace.out"
RPID= SPID=
trap 'for p in $SPID $RPID; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"' EXIT
"$BIN" serve --host 127.0.0.1 --port "$PORT" --data-dir "$DATA" --api-key bench-key > "$DATA/relay.log" 2>&1 &
RPID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
strace -c -f -p "$RPID" -o "$OUT" 2>/dev/null &
SPID=$!
sleep 0.5
"$LOADGEN" -url "http://127.0.0.1:$PORT" -mode closed -sessions "${SESSIONS:-1}" -payload-bytes "${PAYLOAD:-256}" \
  -api-key bench-key -duration 4s -warmup 0s > "$DATA/loadgen.out" 2>&1
kill -INT "$SPID"; wait "$SPID" || true; SPID=
COMMANDS=$(sed -n 's/^RESULT //p' "$DATA/loadgen.out" | python3 -c 'import json, sys; print(json.load(sys.stdin)["commands"])')
echo "sessions ${SESSIONS:-1}, payload ${PAYLOAD:-256} B, store ${SWITCHBOARD_STORE:-sqlite}: $COMMANDS commands"
awk -v c="$COMMANDS" '$NF ~ /^(read|write|writev|readv|pwrite64|pread64|fdatasync|fsync|fcntl|epoll_wait|futex)$/ {
  printf "  %-11s %8.2f per command\n", $NF, $4 / c }' "$OUT"

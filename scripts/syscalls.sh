#!/usr/bin/env bash
# The relay's system calls per relayed command under the shared load generator: starts the
# release build on loopback, attaches `strace -c -f` to it for one closed-loop run, and prints
# the file and socket calls divided by the commands relayed.
#   scripts/syscalls.sh            env: SESSIONS (1), PAYLOAD (256), SWITCHBOARD_STORE, BIN
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/relay-under-load.sh
command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
PORT="${PORT:-21950}"
DATA=$(mktemp -d /tmp/switchboard-syscalls.XXXXXX)
OUT="$DATA/strace.out"
RPID= SPID=
trap 'for p in $SPID $RPID; do kill "$p" 2>/dev/null || true; done; rm -rf "$DATA"' EXIT
start_relay "$DATA"
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

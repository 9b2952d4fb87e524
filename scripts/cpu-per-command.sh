#!/usr/bin/env bash
# The relay's CPU per relayed command: starts a release build on loopback pinned to CPU 0, runs
# the shared load generator (closed loop, pinned to CPU 1) against it, and prints throughput,
# latency and the CPU of all the relay's threads (utime + stime from /proc) divided by the
# commands relayed. Alternate two builds to compare them:
#   for i in 1 2 3; do for b in old new; do BIN=/tmp/sb-$b scripts/cpu-per-command.sh; done; done
#   env: BIN, SESSIONS (100), PAYLOAD (256), DURATION (6), SWITCHBOARD_STORE, PORT
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/relay-under-load.sh
PORT="${PORT:-21961}"
DATA=$(mktemp -d /tmp/switchboard-cpu.XXXXXX)
RPID=
trap 'if [ -n "$RPID" ]; then kill "$RPID" 2>/dev/null || true; fi; rm -rf "$DATA"' EXIT
start_relay "$DATA" taskset -c 0
ticks() { awk '{print $14 + $15}' "/proc/$RPID/stat"; }
T0=$(ticks)
taskset -c 1 "$LOADGEN" -url "http://127.0.0.1:$PORT" -mode closed -sessions "${SESSIONS:-100}" -payload-bytes "${PAYLOAD:-256}" \
  -api-key bench-key -duration "${DURATION:-6}s" -warmup 0s > "$DATA/loadgen.out" 2>&1
T1=$(ticks)
sed -n 's/^RESULT //p' "$DATA/loadgen.out" | python3 -c '
import json, os, sys
d = json.load(sys.stdin); ticks = int(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK")
print("%s: %.0f cmds/s, p50 %.0f us, p99 %.0f us, CPU %.1f us per command" % (sys.argv[2], d["throughput_cps"], d["p50_us"], d["p99_us"], ticks * 1e6 / hz / d["commands"]))' \
  "$((T1 - T0))" "$(basename "$BIN")"

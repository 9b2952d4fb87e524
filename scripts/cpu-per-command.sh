#!/usr/bin/env bash
# The relay's CPU per relayed command: starts a release build on loopback pinned to CPU 0, runs
# the shared load generator (closed loop, pinned to CPU 1) against it, and prints throughput,
# latency and the CPU of all the relay's threads (utime + stime from /proc) divided by the
# commands relayed, in all and per thread (the event loop, the store's writer, the traffic
# log's writer) with each thread's page faults per command. Alternate two builds to compare them:
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
# One line per thread: its name (the loop is the main thread) and its CPU ticks.
threads() {
  for t in /proc/"$RPID"/task/*; do
    name=$(cat "$t/comm"); [ "$(basename "$t")" = "$RPID" ] && name=event-loop
    echo "$name $(awk '{print $14 + $15, $10}' "$t/stat")"
  done
}
threads > "$DATA/threads.before"
T0=$(ticks)
taskset -c 1 "$LOADGEN" -url "http://127.0.0.1:$PORT" -mode closed -sessions "${SESSIONS:-100}" -payload-bytes "${PAYLOAD:-256}" \
  -api-key bench-key -duration "${DURATION:-6}s" -warmup 0s > "$DATA/loadgen.out" 2>&1
T1=$(ticks)
threads > "$DATA/threads.after"
sed -n 's/^RESULT //p' "$DATA/loadgen.out" | python3 -c '
import collections, json, os, sys
d = json.load(sys.stdin); ticks = int(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK")
per = lambda t: t * 1e6 / hz / d["commands"]
print("%s: %.0f cmds/s, p50 %.0f us, p99 %.0f us, CPU %.1f us per command" % (sys.argv[2], d["throughput_cps"], d["p50_us"], d["p99_us"], per(ticks)))
spent, faults = collections.Counter(), collections.Counter()
for path, sign in ((sys.argv[4], 1), (sys.argv[3], -1)):
    for line in open(path):
        name, t, f = line.rsplit(" ", 2)
        spent[name] += sign * int(t)
        faults[name] += sign * int(f)
print("  per thread: " + ", ".join("%s %.1f us (%.1f page faults)" % (n, per(t), faults[n] / d["commands"]) for n, t in spent.most_common() if t > 0))' \
  "$((T1 - T0))" "$(basename "$BIN")" "$DATA/threads.before" "$DATA/threads.after"

#!/usr/bin/env bash
# Side-by-side relay benchmark: builds Switchboard (release), copies ../shared/bench to a
# scratch directory, builds the peers it can (Go, tcp floor, Python, Node; Hummingbird unless
# PEERS says otherwise), runs the shared load generator against each (relay pinned to CPU 0,
# load generator to CPU 1), then the reconnect storm, and prints the median table.
#   scripts/bench.sh [REPS]          env: PEERS="sb tcp go hb node py", STORM_SESSIONS=8000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPS="${1:-1}"
ROOT="$PWD"
SHARED="${SHARED_BENCH:-$(cd .. && pwd)/shared/bench}"
WORK="${BENCH_DIR:-/tmp/switchboard-bench}"
export PEERS="${PEERS:-sb tcp go hb node py}"
# One benchmark session sends ~3 000 messages/s per peer, over the protocol's default
# per-peer rate limit (1 000/s, burst 2 000), and the 64 KiB scenarios ~40 MB/s per peer, over
# the default byte rate (4 MiB/s); the idle scenario opens 10 000 connections from one address
# (the default per-address cap). Lift these limits for the measurement.
export SWITCHBOARD_RATE_PER_SECOND="${SWITCHBOARD_RATE_PER_SECOND:-10000000}" SWITCHBOARD_RATE_BURST="${SWITCHBOARD_RATE_BURST:-10000000}"
export SWITCHBOARD_RATE_BYTES_PER_SECOND="${SWITCHBOARD_RATE_BYTES_PER_SECOND:-1099511627776}"
export SWITCHBOARD_RATE_BYTES_BURST="${SWITCHBOARD_RATE_BYTES_BURST:-1099511627776}"
export SWITCHBOARD_MAX_CONNECTIONS_PER_IP="${SWITCHBOARD_MAX_CONNECTIONS_PER_IP:-1000000}"
RESULTS="${RESULTS:-$WORK/results.jsonl}"
export RESULTS
[ -d "$SHARED/loadgen" ] || [ -x "$WORK/loadgen/loadgen" ] || { echo "bench: no benchmark folder at $SHARED (set SHARED_BENCH)" >&2; exit 1; }

scripts/install-deps.sh
need=()
for pkg in golang-go golang-github-gorilla-websocket-dev node-ws gcc python3-venv; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi

swift build -c release --product switchboard
mkdir -p "$WORK"
[ -x "$WORK/loadgen/loadgen" ] || { rm -rf "$WORK"; cp -r "$SHARED" "$WORK"; }
(cd "$WORK" && loadgen/build.sh && go-relay/build.sh && tcp-floor/build.sh && py-relay/setup.sh)
case " $PEERS " in *" hb "*) [ -x "$WORK/hb-relay/.build/release/HBRelay" ] || (cd "$WORK" && hb-relay/build.sh) ;; esac
(cd scripts/storm && GOFLAGS=-mod=mod GOPROXY=off GOSUMDB=off go build -o "$WORK/storm" .)

cp .build/release/switchboard "$WORK/switchboard"
# Each relay run makes its data directory with `mktemp -d` (the 64 KiB runs leave gigabytes of
# journal): all of them go under one folder, removed when the benchmark ends.
DATA=$(mktemp -d /tmp/switchboard-bench-data.XXXXXX)
export TMPDIR="$DATA"
# Each Switchboard run starts by deleting the data directories of the runs before it and
# waiting for the disk to finish what it was writing: their pages not yet written (gigabytes
# after a 64 KiB run) would otherwise be written back during the next run, which the kernel
# then throttles (the 100-session 64 KiB run measured 968 cmds/s right after the 1-session one,
# 1 461-1 555 alone). The peers write nothing to disk.
cat > "$WORK/switchboard-run" <<WRAPPER
#!/usr/bin/env bash
mine=; prev=
for a in "\$@"; do [ "\$prev" = --data-dir ] && mine="\$a"; prev="\$a"; done
for d in "$DATA"/tmp.*; do [ "\$d" = "\$mine" ] || rm -rf "\$d"; done
sync
exec "$WORK/switchboard" "\$@"
WRAPPER
chmod +x "$WORK/switchboard-run"
RPID=
trap 'if [ -n "$RPID" ]; then kill $RPID 2>/dev/null || true; fi; rm -rf "$DATA"' EXIT
rm -f "$RESULTS" "$WORK/memory.jsonl"
mkdir -p /tmp/peer-results
(cd "$WORK" && SWITCHBOARD_BIN="$WORK/switchboard-run" bench/run-all.sh "$REPS")
# Switchboard once more with the in-memory store, to separate the relay's cost from the store's.
for sc in a b c a64 b64 d; do
  (cd "$WORK" && RESULTS="$WORK/memory.jsonl" SWITCHBOARD_STORE=memory SWITCHBOARD_BIN="$WORK/switchboard-run" bench/run-one.sh sb "$sc" 21500)
done

# Reconnect storm against Switchboard, relay pinned like the others.
ulimit -n "$(ulimit -Hn)"
PORT=21999
taskset -c 0 "$WORK/switchboard-run" serve --port "$PORT" --data-dir "$(mktemp -d)" --api-key bench-key > "$WORK/storm-relay.log" 2>&1 &
RPID=$!
sleep 1
taskset -c 1 "$WORK/storm" -url "http://127.0.0.1:$PORT" -api-key bench-key -sessions "${STORM_SESSIONS:-8000}" | tee "$WORK/storm.out"
kill $RPID

python3 scripts/bench-table.py "$RESULTS" "$WORK/storm.out" "$WORK/memory.jsonl"

# Sourced by the scripts that measure the release relay under the shared load generator
# (syscalls.sh, cpu-per-command.sh): where the load generator and the binary are, the
# per-peer limits lifted for the measurement, and `start_relay`.
# Run scripts/bench.sh once first (it builds the load generator under BENCH_DIR).
WORK="${BENCH_DIR:-/tmp/switchboard-bench}"
LOADGEN="$WORK/loadgen/loadgen"
BIN="${BIN:-$PWD/.build/release/switchboard}"
[ -x "$LOADGEN" ] || { echo "$(basename "$0"): no load generator at $LOADGEN (run scripts/bench.sh once)" >&2; exit 1; }
[ -x "$BIN" ] || swift build -c release --product switchboard
export SWITCHBOARD_RATE_PER_SECOND=10000000 SWITCHBOARD_RATE_BURST=10000000 SWITCHBOARD_RATE_BYTES_PER_SECOND=1099511627776
export SWITCHBOARD_RATE_BYTES_BURST=1099511627776 SWITCHBOARD_MAX_CONNECTIONS_PER_IP=1000000

# start_relay DATA [COMMAND PREFIX…]: starts BIN on 127.0.0.1:$PORT with DATA as its data
# directory (behind the prefix, e.g. `taskset -c 0`), sets RPID and waits for the port.
start_relay() {
  local data=$1
  shift
  "$@" "$BIN" serve --host 127.0.0.1 --port "$PORT" --data-dir "$data" --api-key bench-key > "$data/relay.log" 2>&1 &
  RPID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
}

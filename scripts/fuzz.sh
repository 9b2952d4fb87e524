#!/usr/bin/env bash
# Builds and runs a libFuzzer harness against the project's own code.
#
#   scripts/fuzz.sh TARGET [RUNS] [-- libFuzzer flags…]   run TARGET (default 10 000 000 runs)
#   scripts/fuzz.sh all SECONDS                            every target for SECONDS each (CI)
#   scripts/fuzz.sh list                                   the targets
#
# Targets: http (request parser + handshake validation), frames (frame parser, message
# assembly, UTF-8), inflate (permessage-deflate inflation through the frame layer), json (the
# JSON parser), inbound (the inbound decoder with catalog validation, numbers and patterns),
# session (a session driven by a fuzzed sequence of worker/client/debug messages, timer
# firings, store failures and restarts, against fake connections and a fake store).
#
# Modules are compiled with -sanitize=fuzzer,address into .build-fuzz/; crashes are written
# there as crash-*; the seeded corpora are in Fuzz/corpus/TARGET (new inputs go to
# .build-fuzz/corpus/TARGET, the committed seeds are never modified).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
TARGETS="http frames inflate json inbound session"
B=.build-fuzz
[ "${1:-}" = list ] && { echo "$TARGETS"; exit 0; }
target="${1:?usage: scripts/fuzz.sh TARGET|all [RUNS|SECONDS]}"
shift

SWIFTC="${SWIFTC:-swiftc}"
# libFuzzer and AddressSanitizer report crashes; Swift's own backtracer would get in their way.
export SWIFT_BACKTRACE=enable=no
FLAGS=(-sanitize=fuzzer,address -parse-as-library -O -g -swift-version 6 -enable-testing -I "$B"
       -I Sources/CZlib -I Sources/COpenSSL -I Sources/CSystem -I Sources/CSQLite -I Sources/CSQLiteWAL/include -I Sources/CPostgreSQL -Xcc -I/usr/include/postgresql)

build_modules() {
  mkdir -p "$B"
  local stamp="$B/.sources" now
  now=$(cat Sources/{SwitchboardProtocol,WebSocketCore,SocketServer,SwitchboardServer}/*.swift Sources/CSQLiteWAL/*.c Fuzz/*.swift Tests/SwitchboardServerTests/Fakes.swift scripts/fuzz.sh | sha256sum | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$now" ] && return 0
  # FUZZ_REUSE=1 runs what was built last even if the sources changed since (long runs).
  [ "${FUZZ_REUSE:-}" = 1 ] && [ -f "$stamp" ] && return 0
  echo "fuzz: building instrumented modules in $B" >&2
  "${CLANG:-clang}" -O1 -g -fsanitize=fuzzer-no-link,address -I Sources/CSQLiteWAL/include -c Sources/CSQLiteWAL/wal_vfs.c -o "$B/CSQLiteWAL.o"
  for m in SwitchboardProtocol WebSocketCore SocketServer SwitchboardServer; do
    "$SWIFTC" "${FLAGS[@]}" -module-name "$m" -emit-module -emit-module-path "$B/$m.swiftmodule" -wmo \
      -c Sources/$m/*.swift -o "$B/$m.o"
  done
  for t in $TARGETS; do
    "$SWIFTC" "${FLAGS[@]}" -module-name "Fuzz_$t" -D "FUZZ_$(echo "$t" | tr a-z A-Z)" Fuzz/*.swift Tests/SwitchboardServerTests/Fakes.swift \
      "$B"/SwitchboardProtocol.o "$B"/WebSocketCore.o "$B"/SocketServer.o "$B"/SwitchboardServer.o "$B"/CSQLiteWAL.o \
      -lz -lssl -lcrypto -lsqlite3 -lpq -use-ld=lld -o "$B/fuzz-$t"
  done
  echo "$now" > "$stamp"
}

run_one() {
  local t="$1"; shift
  mkdir -p "$B/corpus/$t" "$B/artifacts"
  # New inputs go to the working corpus; the committed seeds are read only.
  "$B/fuzz-$t" "$B/corpus/$t" "Fuzz/corpus/$t" -artifact_prefix="$B/artifacts/$t-" -print_final_stats=1 \
    -rss_limit_mb=4096 -timeout=10 -detect_leaks=0 "$@" 2>&1 | tee "$B/$t.log" | grep -aE "^(#[0-9]+ *DONE|Done|==[0-9]+==|SUMMARY|stat::number_of_executed_units|stat::peak_rss_mb)" || true
  if grep -aqE "^(==[0-9]+==ERROR|SUMMARY: |.*deadly signal|.*Fatal error)" "$B/$t.log"; then
    echo "fuzz: $t FOUND A CRASH (see $B/$t.log and $B/artifacts/)" >&2
    return 1
  fi
  echo "fuzz: $t ok ($(grep -ao "stat::number_of_executed_units: [0-9]*" "$B/$t.log" | awk '{print $2}') runs)"
}

build_modules
if [ "$target" = all ]; then
  secs="${1:-30}"
  fail=0
  for t in $TARGETS; do run_one "$t" -max_total_time="$secs" || fail=1; done
  exit $fail
fi
case " $TARGETS " in *" $target "*) ;; *) echo "unknown target $target (try: $TARGETS)" >&2; exit 2 ;; esac
runs="${1:-10000000}"; shift || true
[ "${1:-}" = "--" ] && shift
run_one "$target" -runs="$runs" "$@"

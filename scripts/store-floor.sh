#!/usr/bin/env bash
# What SQLite (and LMDB, RocksDB when their development packages are installed:
# apt-get install liblmdb-dev librocksdb-dev) cost per stored row with nothing of Switchboard
# around them, and what LMDB would spend on the writes of one relayed command at 5 to 500
# commands per commit; see scripts/store-floor.c and the README's Performance section. Then what
# Switchboard's own store costs per relayed command, through its writer with no sockets
# (`switchboard bench-store`, release build), at 5, 20 and 40 commands per commit.
#   scripts/store-floor.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp /tmp/store-floor.XXXXXX)
data=$(mktemp -d /tmp/store-floor-data.XXXXXX)
trap 'rm -rf "$bin" "$data"' EXIT
flags=(-lsqlite3)
[ -f /usr/include/lmdb.h ] && flags+=(-DWITH_LMDB -llmdb)
[ -f /usr/include/rocksdb/c.h ] && flags+=(-DWITH_ROCKSDB -lrocksdb)
cc -O2 -Wall scripts/store-floor.c -o "$bin" "${flags[@]}"
# Pinned to one core, like the relay in scripts/bench.sh.
for _ in $(seq "${1:-1}"); do taskset -c 0 "$bin" "$data"; done
swift build -c release --product switchboard >/dev/null
for _ in $(seq "${1:-1}"); do
  for batch in 5 20 40; do taskset -c 0 .build/release/switchboard bench-store --commands 100000 --batch "$batch"; done
done

#!/usr/bin/env bash
# The store's cost on several nodes: the shared bench's load generator through HAProxy
# against one node on SQLite, one node on PostgreSQL and three nodes on PostgreSQL, side by
# side (scripts/cluster.sh starts each setup on loopback and stops it by PID).
#
#   scripts/cluster-bench.sh BENCH_DIR [SESSIONS] [SECONDS]
#
# BENCH_DIR is a writable copy of the shared bench with loadgen built (its README). Prints one
# table: commands per second, round-trip p50/p99, and for PostgreSQL the transactions and
# rows written per command (pg_stat_database). Nothing is pinned: PostgreSQL, HAProxy, the
# nodes and the load generator share the machine's cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="${1:?usage: cluster-bench.sh BENCH_DIR [SESSIONS] [SECONDS]}"
SESSIONS="${2:-100}"
SECS="${3:-10}"
export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$ROOT/.build/release/switchboard}"
# One closed-loop session must not be throttled by the per-peer limits.
export SWITCHBOARD_RATE_PER_SECOND=10000000 SWITCHBOARD_RATE_BURST=10000000
export SWITCHBOARD_RATE_BYTES_PER_SECOND=1099511627776 SWITCHBOARD_RATE_BYTES_BURST=1099511627776
export SWITCHBOARD_MAX_CONNECTIONS_PER_IP=1000000
OUT="$(mktemp -d)"
chmod 755 "$OUT"  # PostgreSQL runs as its own user under it
ulimit -n "$(ulimit -Hn)"

pgstat() {  # transactions and rows written so far in the switchboard database
  psql -AtqX -F ' ' "$1" -c "SELECT pg_stat_force_next_flush(); SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = 'switchboard'" | tail -1
}

for setup in "sqlite 1" "postgres 1" "postgres 3" "postgres 1 async"; do
  set -- $setup
  store=$1 nodes=$2 dir="$OUT/$1-$2${3:+-$3}"
  # "async": the nodes' sessions commit with synchronous_commit = off (no WAL flush wait).
  info="$(PG_URL_PARAMS="${3:+?options=-csynchronous_commit%3Doff}" "$ROOT/scripts/cluster.sh" up --store "$store" --nodes "$nodes" --dir "$dir")"
  url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$info")"
  key="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["apiKey"])' "$info")"
  pg="$(python3 -c 'import json,sys; p=json.loads(sys.argv[1])["postgres"]; print(p["url"] if p else "")' "$info")"
  before=""; [ -z "$pg" ] || before="$(pgstat "$pg")"
  "$BENCH/loadgen/loadgen" -url "$url" -api-key "$key" -mode closed -sessions "$SESSIONS" -duration "${SECS}s" -warmup 2s \
    -label "$store x$nodes" | grep '^RESULT' | sed 's/^RESULT //' > "$dir.result" || true
  sleep 2  # the nodes' statistics reach pg_stat_database within a second of their last transaction
  after=""; [ -z "$pg" ] || after="$(pgstat "$pg")"
  echo "$before|$after" > "$dir.pg"
  "$ROOT/scripts/cluster.sh" down --dir "$dir"
done

# Memory: idle sessions (a worker and a client each) held by one PostgreSQL node through HAProxy.
dir="$OUT/idle"
info="$("$ROOT/scripts/cluster.sh" up --nodes 1 --dir "$dir")"
url="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["url"])' "$info")"
key="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["apiKey"])' "$info")"
node="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["nodes"][0]["pid"])' "$info")"
hap="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["haproxy"]["pid"])' "$info")"
hap0="$(awk '/VmRSS/{print $2}' /proc/$hap/status)"
"$BENCH/loadgen/loadgen" -url "$url" -api-key "$key" -mode idle -sessions 2000 -pid "$node" -idle-wait 3s -label idle \
  | grep '^RESULT' | sed 's/^RESULT //' > "$dir.result" || true
echo "$hap0 $(awk '/VmRSS/{print $2}' /proc/$hap/status)" > "$dir.haproxy"
"$ROOT/scripts/cluster.sh" down --dir "$dir"

python3 - "$OUT" "$SESSIONS" "$SECS" <<'PY'
import json, sys
out, sessions, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
print(f"| through HAProxy, {sessions} sessions | cmds/s | p50 µs | p99 µs | PostgreSQL transactions per command | rows written per command |")
print("|---|---|---|---|---|---|")
for name, label in [("sqlite-1", "1 node, SQLite"), ("postgres-1", "1 node, PostgreSQL"), ("postgres-3", "3 nodes, PostgreSQL"),
                    ("postgres-1-async", "1 node, PostgreSQL, synchronous_commit = off")]:
    try:
        r = json.loads(open(f"{out}/{name}.result").read())
    except Exception as e:
        print(f"| {label} | failed ({e!r}) | | | | |")
        continue
    rate = r["throughput_cps"]
    tx = rows = "–"
    before, after = open(f"{out}/{name}.pg").read().strip().split("|")
    if before and after:
        # The counters include the 2 s warm-up, run at about the measured rate.
        total = rate * (secs + 2)
        (bt, br), (at, ar) = [[int(v) for v in x.split("|")] if "|" in x else [int(v) for v in x.split()] for x in (before, after)]
        tx, rows = f"{(at - bt) / total:.2f}", f"{(ar - br) / total:.1f}"
    print(f"| {label} | {rate:.0f} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {tx} | {rows} |")
try:
    r = json.loads(open(f"{out}/idle.result").read())
    h0, h1 = [int(v) for v in open(f"{out}/idle.haproxy").read().split()]
    print()
    print(f"idle, 2 000 sessions (4 000 connections) on one PostgreSQL node through HAProxy: "
          f"node RSS {r['relay_rss_after_kb'] / 1024:.1f} MiB (+{r['rss_per_conn_bytes'] / 1024:.1f} KiB per connection), "
          f"HAProxy +{(h1 - h0) / 4000:.1f} KiB per proxied connection")
except Exception as e:
    print(f"idle run failed: {e!r}")
PY

#!/usr/bin/env bash
# A throwaway cluster on loopback: PostgreSQL (initdb in a temporary directory, as an
# unprivileged user), N Switchboard nodes on it (store = postgres) and HAProxy in front,
# hashing on the session id (config/haproxy.cfg is the same configuration for production).
#
#   scripts/cluster.sh up [--nodes N] [--dir DIR]   prints one JSON line:
#       {"url": HAPROXY_URL, "apiKey": KEY, "dir": DIR, "postgres": {"pid": PID, "url": URL},
#        "haproxy": {"pid": PID}, "nodes": [{"pid": PID, "url": NODE_URL, "name": NAME}, …]}
#   scripts/cluster.sh down [--dir DIR]             stops everything `up` started, by PID
#   scripts/cluster.sh node N [--dir DIR]           starts node N again (after a test killed it)
#   scripts/cluster.sh cut N | heal N [--dir DIR]   (with `up --netns`) takes node N's link down / up
#
# `up --netns` runs each node in a network namespace of its own, joined to this one by a veth
# pair (10.A.K.2 in the namespace, 10.A.K.1 here; PostgreSQL and HAProxy reach it there), so
# `cut` separates a node from the balancer and the database at once while it keeps running.
# It needs root (ip netns); the namespaces and links are removed by `down`.
#
# `up --store sqlite --nodes 1` starts one node on its own SQLite store behind the same HAProxy
# (no PostgreSQL; the single-node baseline of scripts/cluster-bench.sh).
#
# SWITCHBOARD_BIN picks the binary (default: .build/release/switchboard, else .build/debug);
# LEASE_MS the nodes' lease (default 3000); PG_URL_PARAMS is appended to the nodes' connection
# string (e.g. "?options=-csynchronous_commit%3Doff"). Extra environment (SWITCHBOARD_*) reaches the nodes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"; shift || true
NODES=3
DIR="${TMPDIR:-/tmp}/switchboard-cluster"
NODE=""
KEEP=""
STORE=postgres
NETNS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --keep-logs) KEEP=1; shift ;;
    --store) STORE="$2"; shift 2 ;;
    --netns) NETNS=1; shift ;;
    *) if [ "$cmd" = node ] || [ "$cmd" = cut ] || [ "$cmd" = heal ] && [ -z "$NODE" ]; then NODE="$1"; shift; else echo "cluster.sh: unknown argument $1" >&2; exit 2; fi ;;
  esac
done
BIN="${SWITCHBOARD_BIN:-}"
if [ -z "$BIN" ]; then
  if [ -x "$ROOT/.build/release/switchboard" ]; then BIN="$ROOT/.build/release/switchboard"; else BIN="$ROOT/.build/debug/switchboard"; fi
fi
LEASE_MS="${LEASE_MS:-3000}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for SECONDS COMMAND…: until COMMAND succeeds
  local until=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$until" ] || return 1
    sleep 0.1
  done
}

# Network namespaces (--netns): names and addresses derived from DIR, so clusters in other
# directories do not collide.
ns_tag() { echo "$DIR" | md5sum | cut -c1-4; }
ns_name() { echo "sb$(ns_tag)n$1"; }
ns_link() { echo "sb$(ns_tag)h$1"; }
ns_net() { echo "10.$(( 0x$(ns_tag | cut -c1-2) % 200 + 20 ))"; }
node_addr() { if [ -f "$DIR/netns" ]; then echo "$(ns_net).$1.2"; else echo 127.0.0.1; fi; }
db_addr() { if [ -f "$DIR/netns" ]; then echo "$(ns_net).$1.1"; else echo 127.0.0.1; fi; }

make_netns() {  # make_netns K
  local k="$1" ns link net
  ns="$(ns_name "$k")" link="$(ns_link "$k")" net="$(ns_net)"
  ip netns add "$ns"
  ip link add "$link" type veth peer name "${link}p"
  ip link set "${link}p" netns "$ns"
  ip addr add "$net.$k.1/30" dev "$link"
  ip link set "$link" up
  ip netns exec "$ns" ip addr add "$net.$k.2/30" dev "${link}p"
  ip netns exec "$ns" ip link set "${link}p" up
  ip netns exec "$ns" ip link set lo up
}

start_node() {  # start_node K: starts node K (1-based) with the ports recorded in DIR
  local k="$1" port addr run=()
  port="$(cat "$DIR/node$k.port")"
  addr="$(node_addr "$k")"
  mkdir -p "$DIR/node$k"
  local store=(--store sqlite)
  local db
  db="$(sed "s|@127.0.0.1:|@$(db_addr "$k"):|" "$DIR/postgres.url" 2>/dev/null || true)"
  [ "$(cat "$DIR/store")" = sqlite ] || store=(--store postgres --postgres-url "$db${PG_URL_PARAMS:-}" --node-name "node$k" --lease-ms "$LEASE_MS")
  [ ! -f "$DIR/netns" ] || run=(ip netns exec "$(ns_name "$k")")
  # setsid: a signal to this script's process group does not reach the node. (ip netns exec
  # and setsid exec the server: the PID recorded is the server's.)
  "${run[@]}" setsid "$BIN" serve --host "$addr" --port "$port" --data-dir "$DIR/node$k" "${store[@]}" \
    --public-url "$(cat "$DIR/url")" --api-key "$(cat "$DIR/api-key")" </dev/null >>"$DIR/node$k.log" 2>&1 &
  echo $! > "$DIR/node$k.pid"
  wait_for 30 curl -sf "http://$addr:$port/readyz" || { echo "cluster.sh: node$k did not start (see $DIR/node$k.log)" >&2; return 1; }
}

alive() {  # alive PID: running (a zombie waiting for its parent to reap it is not)
  [ -r "/proc/$1/stat" ] && ! awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); exit !(f[1] == "Z" || f[1] == "X") }' "/proc/$1/stat"
}

stop_pid() {  # stop_pid FILE: SIGTERM, then SIGKILL after 10 s
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if alive "$pid"; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

print_json() {
  python3 - "$DIR" "$NODES" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
r = lambda f: open(f"{d}/{f}").read().strip()
print(json.dumps({"url": r("url"), "apiKey": r("api-key"), "dir": d,
                  "postgres": {"pid": int(r("postgres.pid")), "url": r("postgres.url")} if r("store") == "postgres" else None,
                  "haproxy": {"pid": int(r("haproxy.pid"))},
                  "nodes": [{"pid": int(r(f"node{k}.pid")), "url": f"http://{r(f'node{k}.addr')}:{r(f'node{k}.port')}", "name": f"node{k}"}
                            for k in range(1, n + 1)]}))
PY
}

case "$cmd" in
  up)
    command -v haproxy >/dev/null || { echo "cluster.sh: haproxy is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
    [ -x "$BIN" ] || { echo "cluster.sh: no switchboard binary at $BIN (swift build first)" >&2; exit 1; }
    [ ! -f "$DIR/postgres.pid" ] || { echo "cluster.sh: a cluster runs in $DIR already (cluster.sh down --dir $DIR)" >&2; exit 1; }
    mkdir -p "$DIR"
    # A start that fails stops what it started.
    trap 'echo "cluster.sh: stopping what was started" >&2; "$0" down --dir "$DIR" --keep-logs' ERR
    echo "$NODES" > "$DIR/nodes"
    echo "$STORE" > "$DIR/store"
    if [ -n "$NETNS" ]; then
      touch "$DIR/netns"
      for k in $(seq "$NODES"); do make_netns "$k"; done
    fi
    for k in $(seq "$NODES"); do node_addr "$k" > "$DIR/node$k.addr"; done
    if [ "$STORE" = postgres ]; then
      # With namespaces PostgreSQL also listens on this side of each node's link.
      listen="127.0.0.1"
      [ -z "$NETNS" ] || for k in $(seq "$NODES"); do listen+=",$(db_addr "$k")"; done
      PG_LISTEN="$listen" PG_TRUST="$([ -z "$NETNS" ] || echo "$(ns_net).0.0/16")" "$ROOT/scripts/postgres.sh" up "$DIR" >/dev/null
      cp "$DIR/pg/pid" "$DIR/postgres.pid"
      cp "$DIR/pg/url" "$DIR/postgres.url"
    fi
    haport="$(free_port)"
    echo "http://127.0.0.1:$haport" > "$DIR/url"
    python3 -c 'import secrets; print("sk_" + secrets.token_hex(16))' > "$DIR/api-key"
    servers=""
    for k in $(seq "$NODES"); do
      free_port > "$DIR/node$k.port"
      servers+="  server node$k $(cat "$DIR/node$k.addr"):$(cat "$DIR/node$k.port")"$'\n'
    done
    sed -e "s|@BIND@|127.0.0.1:$haport|" "$ROOT/config/haproxy.cfg" | python3 -c '
import sys; text = sys.stdin.read(); servers = sys.argv[1]
print(text.replace("  server node1 127.0.0.1:8081 # @SERVERS@\n", servers), end="")' "$servers" > "$DIR/haproxy.cfg"
    for k in $(seq "$NODES"); do start_node "$k"; done
    setsid haproxy -f "$DIR/haproxy.cfg" -db </dev/null >"$DIR/haproxy.log" 2>&1 &
    echo $! > "$DIR/haproxy.pid"
    wait_for 30 curl -sf "http://127.0.0.1:$haport/readyz" || { echo "cluster.sh: haproxy did not start (see $DIR/haproxy.log)" >&2; false; }
    print_json
    ;;
  node)
    [ -n "$NODE" ] || { echo "usage: cluster.sh node N [--dir DIR]" >&2; exit 2; }
    NODES="$(cat "$DIR/nodes")"
    stop_pid "$DIR/node$NODE.pid"
    start_node "$NODE"
    print_json
    ;;
  cut|heal)
    [ -n "$NODE" ] && [ -f "$DIR/netns" ] || { echo "usage: cluster.sh cut|heal N (a cluster started with --netns)" >&2; exit 2; }
    ip link set "$(ns_link "$NODE")" "$([ "$cmd" = cut ] && echo down || echo up)"
    ;;
  down)
    [ -d "$DIR" ] || exit 0
    stop_pid "$DIR/haproxy.pid"
    for f in "$DIR"/node*.pid; do [ -e "$f" ] && stop_pid "$f"; done
    "$ROOT/scripts/postgres.sh" down "$DIR"
    rm -f "$DIR/postgres.pid"
    if [ -f "$DIR/netns" ]; then
      for k in $(seq "$(cat "$DIR/nodes")"); do
        ip link del "$(ns_link "$k")" 2>/dev/null || true
        ip netns del "$(ns_name "$k")" 2>/dev/null || true
      done
    fi
    [ -n "$KEEP" ] || rm -rf "$DIR"
    ;;
  *)
    echo "usage: cluster.sh up [--nodes N] [--dir DIR] | down [--dir DIR] | node N [--dir DIR]" >&2; exit 2 ;;
esac

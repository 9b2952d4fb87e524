#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for tests and scripts/cluster.sh: a new cluster
# (initdb) in DIR/pg, owned by an unprivileged user when run as root (PostgreSQL refuses
# root), trust authentication on 127.0.0.1 only, database `switchboard`.
#
#   scripts/postgres.sh up DIR     prints one JSON line {"pid": PID, "url": "postgresql://…"}
#   scripts/postgres.sh down DIR   stops it by its PID (fast shutdown) and removes DIR/pg
#
# PG_LISTEN (default 127.0.0.1) lists the addresses it listens on; PG_TRUST adds a network
# (CIDR) whose clients are trusted too (scripts/cluster.sh --netns: the nodes' links).
set -euo pipefail
cmd="${1:-}"; DIR="${2:-}"
[ -n "$cmd" ] && [ -n "$DIR" ] || { echo "usage: postgres.sh up|down DIR" >&2; exit 2; }
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"

as_user() {
  if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups "$@"; else "$@"; fi
}

case "$cmd" in
  up)
    [ -n "$PGBIN" ] || { echo "postgres.sh: PostgreSQL is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
    mkdir -p "$DIR/pg"
    if [ "$(id -u)" = 0 ]; then
      chown postgres: "$DIR/pg"
      chmod a+x "$DIR"  # the server's user must reach DIR/pg
      as_user test -w "$DIR/pg" || { echo "postgres.sh: the postgres user cannot write $DIR/pg (a parent directory is private)" >&2; exit 1; }
    fi
    as_user "$PGBIN/initdb" -D "$DIR/pg/data" -U postgres --auth=trust -E UTF8 >"$DIR/pg/initdb.log" 2>&1
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    # A simple command in the background: $! is the server's own PID (setpriv execs it).
    [ -z "${PG_TRUST:-}" ] || echo "host all all $PG_TRUST trust" | as_user tee -a "$DIR/pg/data/pg_hba.conf" >/dev/null
    args=(-D "$DIR/pg/data" -k "$DIR/pg" -h "${PG_LISTEN:-127.0.0.1}" -p "$port" -c max_connections=200)
    if [ "$(id -u)" = 0 ]; then
      setpriv --reuid=postgres --regid=postgres --init-groups "$PGBIN/postgres" "${args[@]}" </dev/null >"$DIR/pg/postgres.log" 2>&1 &
    else
      "$PGBIN/postgres" "${args[@]}" </dev/null >"$DIR/pg/postgres.log" 2>&1 &
    fi
    echo $! > "$DIR/pg/pid"
    for _ in $(seq 300); do
      "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres && break
      kill -0 "$(cat "$DIR/pg/pid")" 2>/dev/null || break
      sleep 0.1
    done
    "$PGBIN/psql" -qX -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE switchboard" >/dev/null || {
      echo "postgres.sh: PostgreSQL did not start (see $DIR/pg/postgres.log)" >&2; "$0" down "$DIR"; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/switchboard" > "$DIR/pg/url"
    printf '{"pid": %s, "url": "%s"}\n' "$(cat "$DIR/pg/pid")" "$(cat "$DIR/pg/url")"
    ;;
  down)
    [ -f "$DIR/pg/pid" ] || exit 0
    pid="$(cat "$DIR/pg/pid")"
    # SIGINT: fast shutdown (SIGTERM would wait for clients to leave).
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -rf "$DIR/pg"
    ;;
  *) echo "usage: postgres.sh up|down DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Installs what Switchboard needs to build and test on Debian 12 (with Swift 6.3 on PATH):
# the C libraries it links (OpenSSL, zlib, SQLite, libpq), pkg-config, PostgreSQL and HAProxy
# for the several-node tests (scripts/cluster.sh starts throwaway ones; nothing is started
# here), and a Python virtualenv with the independent WebSocket client used by the integration tests. Idempotent and quick when
# everything is already there.
set -euo pipefail

need=()
# chromium runs the reference client's end-to-end tests (xvfb and xauth for its headed mode).
for pkg in libssl-dev zlib1g-dev libsqlite3-dev libpq-dev pkg-config python3-venv openssl curl chromium xvfb xauth \
           postgresql postgresql-client haproxy util-linux; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6.3 toolchain needed)" >&2; exit 1; }

VENV="${SWITCHBOARD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-venv}"
REQ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements-test.txt"
STAMP="$VENV/.stamp"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$(sha256sum "$REQ" | cut -d' ' -f1)" ]; then
  echo "install-deps: python test environment in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  sha256sum "$REQ" | cut -d' ' -f1 > "$STAMP"
fi

#!/usr/bin/env bash
# Scans `switchboard serve` in its default TLS configuration with sslyze (PyPI) and prints
# the protocol, cipher and compliance summary. The certificate is a throwaway self-signed one,
# so sslyze's certificate-trust checks fail by construction; everything else is the server's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-sslyze-venv"
[ -x "$VENV/bin/sslyze" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check sslyze==6.3.1; }
swift build -c release --product switchboard >/dev/null
TMP="$(mktemp -d)"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
.build/release/switchboard serve --port 0 --data-dir "$TMP/data" --api-key scan --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" > "$TMP/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 1 50); do PORT="$(sed -n 's#.*https://127.0.0.1:\([0-9]*\).*#\1#p' "$TMP/serve.log")"; [ -n "$PORT" ] && break; sleep 0.1; done
"$VENV/bin/sslyze" "127.0.0.1:$PORT" > "$TMP/scan.txt" || true
grep -E "OK - |Cipher Suites:|rejected all|accepted the following|^ +TLS_|Forward Secrecy|Compression|Heartbleed|CCS Injection|ROBOT|TLS_FALLBACK|Renegotiation|Supported curves|FAILED - Not|COMPLIANT|^ +\* " "$TMP/scan.txt" | grep -v "Certificate" || true

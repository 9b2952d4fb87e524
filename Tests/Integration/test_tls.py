"""TLS (wss/https) with a certificate made by the test, and permessage-deflate over it,
checked with Python's ssl and the `websockets` client."""
import asyncio
import os
import signal
import socket
import ssl
import subprocess
import time

import pytest
import websockets

import sb
import wsraw
from conftest import BIN, Proc


def make_cert(d, name, san="DNS:localhost"):
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=" + name, "-addext", "subjectAltName=" + san], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def certs(tmp_path):
    return make_cert(str(tmp_path), "localhost")


@pytest.fixture
def tls_echo(certs):
    cert, key = certs
    p = Proc(["echo", "--port", "0", "--tls-cert", cert, "--tls-key", key, "--handshake-timeout-ms", "500"],
             r"listening on wss://127\.0\.0\.1:(\d+)/")
    p.cert = cert
    yield p
    p.stop()


def client_ctx(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def test_wss_verified_with_compression_both_ways(tls_echo):
    async def go():
        async with websockets.connect(f"wss://localhost:{tls_echo.port}/", ssl=client_ctx(tls_echo.cert)) as ws:
            sslobj = ws.transport.get_extra_info("ssl_object")
            assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
            assert sslobj.selected_alpn_protocol() == "http/1.1"
            assert ws.protocol.extensions and ws.protocol.extensions[0].name == "permessage-deflate"
            text = "compress me please " * 5000
            await ws.send(text)
            assert await ws.recv() == text
            big = os.urandom(300_000)
            await ws.send(big)
            assert await ws.recv() == big
    asyncio.run(go())


def test_wrong_hostname_is_refused_by_the_client(tls_echo):
    async def go():
        with pytest.raises(ssl.SSLCertVerificationError):
            await websockets.connect(f"wss://127.0.0.1:{tls_echo.port}/", ssl=client_ctx(tls_echo.cert))
    asyncio.run(go())


def test_plain_http_to_tls_port_gets_a_clear_answer(tls_echo):
    status, _, body = wsraw.http(tls_echo.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 400 and b"speaks TLS" in body


def test_stalled_handshake_is_dropped_at_the_deadline(tls_echo):
    s = socket.create_connection(("127.0.0.1", tls_echo.port), timeout=5)
    s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    start = time.time()
    assert s.recv(100) == b""
    assert time.time() - start < 3
    # Meanwhile other handshakes were not blocked.
    async def go():
        async with websockets.connect(f"wss://localhost:{tls_echo.port}/", ssl=client_ctx(tls_echo.cert)) as ws:
            await ws.send("ok")
            assert await ws.recv() == "ok"
    asyncio.run(go())


def test_weak_protocols_are_refused(tls_echo):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    except ValueError:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with socket.create_connection(("127.0.0.1", tls_echo.port)) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")


def test_sighup_reloads_the_certificate_without_dropping_connections(tmp_path, tls_echo):
    async def go():
        old = await websockets.connect(f"wss://localhost:{tls_echo.port}/", ssl=client_ctx(tls_echo.cert))
        before = old.transport.get_extra_info("ssl_object").getpeercert()
        new_cert, new_key = make_cert(str(tmp_path), "renewed", san="DNS:localhost")
        os.replace(new_cert, tls_echo.cert)
        os.replace(new_key, tls_echo.cert.replace(".pem", ".key"))
        tls_echo.signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        fresh = await websockets.connect(f"wss://localhost:{tls_echo.port}/", ssl=client_ctx(tls_echo.cert))
        after = fresh.transport.get_extra_info("ssl_object").getpeercert()
        assert dict(x[0] for x in before["subject"])["commonName"] == "localhost"
        assert dict(x[0] for x in after["subject"])["commonName"] == "renewed"
        await old.send("still alive")
        assert await old.recv() == "still alive"
        await old.close()
        await fresh.close()
    asyncio.run(go())


@pytest.mark.parametrize("which", ["missing-cert", "missing-key", "mismatch", "garbage"])
def test_bad_certificate_files_fail_at_start_naming_the_file(tmp_path, certs, which):
    cert, key = certs
    other_cert, other_key = make_cert(str(tmp_path), "other")
    garbage = str(tmp_path / "garbage.pem")
    open(garbage, "w").write("not a certificate")
    args = {"missing-cert": (str(tmp_path / "nope.pem"), key), "missing-key": (cert, str(tmp_path / "nope.key")),
            "mismatch": (cert, other_key), "garbage": (garbage, key)}[which]
    out = subprocess.run([BIN, "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--api-key", "k",
                          "--tls-cert", args[0], "--tls-key", args[1]], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    named = {"missing-cert": args[0], "missing-key": args[1], "mismatch": args[1], "garbage": args[0]}[which]
    assert named in out.stderr + out.stdout


def test_serve_over_tls_gives_wss_urls(tmp_path, certs):
    cert, key = certs
    p = Proc(["serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--api-key", "test-key", "--tls-cert", cert, "--tls-key", key],
             r"listening on https://127\.0\.0\.1:(\d+)")
    try:
        import json
        import urllib.request
        req = urllib.request.Request(f"https://localhost:{p.port}/v1/sessions", data=b"{}", method="POST",
                                     headers={"Authorization": "Bearer test-key"})
        s = json.load(urllib.request.urlopen(req, context=ssl.create_default_context(cafile=cert)))
        assert s["websocketUrl"].startswith(f"wss://localhost:{p.port}/sessions/")

        async def go():
            ws = await websockets.connect(f"{s['websocketUrl']}?role=worker&token={s['workerToken']}", ssl=client_ctx(cert))
            await ws.send('{"type":"worker.hello"}')
            assert json.loads(await ws.recv())["type"] == "server.hello"
            await ws.close()
        asyncio.run(go())
    finally:
        p.stop()

"""The WebSocket layer over real loopback sockets, driven by the independent `websockets`
client and by raw sockets."""
import asyncio
import signal
import socket
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

import wsraw


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_echo_text_binary_and_large(echo):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/", max_size=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\xff\x10")
            assert await ws.recv() == b"\x00\xff\x10"
            big = "x" * (3 << 20)
            await ws.send(big)
            assert await ws.recv() == big
    run(go())


def test_handshake_accept_key_and_deflate_offer(echo):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
            assert ws.response.status_code == 101
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            # A compressible message goes through compressed and comes back intact.
            text = "switchboard " * 1000
            await ws.send(text)
            assert await ws.recv() == text
    run(go())


HANDSHAKE = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize("raw,status", [
    (HANDSHAKE + "Sec-WebSocket-Version: 8\r\n\r\n", 426),
    (HANDSHAKE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "") + "Sec-WebSocket-Version: 13\r\n\r\n", 400),
    (HANDSHAKE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=") + "Sec-WebSocket-Version: 13\r\n\r\n", 400),
    (HANDSHAKE.replace("Connection: Upgrade", "Connection: keep-alive") + "Sec-WebSocket-Version: 13\r\n\r\n", 400),
    (HANDSHAKE.replace("GET", "POST") + "Sec-WebSocket-Version: 13\r\n\r\n", 405),
    ("GET / HTTP/1.1\r\nHost: x\r\n" + "X-Big: " + "a" * 17000 + "\r\n\r\n", 431),
    ("GET / HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-H{i}: v\r\n" for i in range(101)) + "\r\n", 431),
    ("NOT A REQUEST\r\n\r\n", 400),
    ("GET / HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
])
def test_handshake_refusals(echo, raw, status):
    code, headers, body = wsraw.http(echo.port, raw.encode())
    assert code == status
    if status == 426:
        assert headers["sec-websocket-version"] == "13"


def test_ping_pong(echo):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
            latency = await asyncio.wait_for(await ws.ping(b"abc"), 5)
            assert latency >= 0
    run(go())


def test_fragmented_message_is_reassembled(echo):
    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/", compression=None) as ws:
            await ws.send(["frag", "ment", "ed ✓"])
            assert await ws.recv() == "fragmented ✓"
    run(go())


def test_client_initiated_close_is_echoed(echo):
    async def go():
        ws = await websockets.connect(f"ws://127.0.0.1:{echo.port}/")
        await ws.close(code=4321, reason="done")
        assert ws.protocol.close_rcvd.code == 4321
    run(go())


def test_server_shutdown_closes_with_1001(echo_factory):
    server = echo_factory()

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as exc:
                await asyncio.wait_for(ws.recv(), 10)
            assert exc.value.rcvd.code == 1001
    run(go())
    assert server.wait() == 0


def test_silent_peer_is_pinged_then_closed_4008(echo_factory):
    server = echo_factory("--ping-interval-ms", "200", "--dead-peer-ms", "700")
    s = wsraw.connect(server.port)
    s.settimeout(5)
    start = time.time()
    opcode, _ = wsraw.read_frame(s)
    assert opcode == 0x9  # ping, which we do not answer
    while True:
        f = wsraw.read_frame(s)
        assert f is not None, "socket closed without a close frame"
        if f[0] == 0x8:
            assert wsraw.close_code(f[1]) == 4008
            break
    assert 0.5 < time.time() - start < 4
    s.close()


def test_vanished_peer_does_not_disturb_others(echo):
    # A peer that resets its connection mid-frame leaves the server serving the next one.
    s = wsraw.connect(echo.port)
    s.sendall(wsraw.frame(0x1, b"x" * 1000)[:500])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST, no close frame

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
    run(go())


@pytest.mark.parametrize("frame,code", [
    (wsraw.frame(0x1, b"unmasked", mask=False), 1002),
    (wsraw.frame(0x3, b""), 1002),
    (wsraw.frame(0x1, b"\xff\xfe"), 1007),
    (wsraw.frame(0x9, b"x" * 126), 1002),
])
def test_protocol_violations_close_with_code(echo, frame, code):
    s = wsraw.connect(echo.port)
    s.sendall(frame)
    f = wsraw.read_frame(s)
    assert f[0] == 0x8
    assert wsraw.close_code(f[1]) == code
    assert wsraw.read_frame(s) is None  # then the server closes the TCP connection
    s.close()


def test_message_over_limit_is_1009(echo_factory):
    server = echo_factory("--max-message-size", "1000")
    s = wsraw.connect(server.port)
    s.sendall(wsraw.frame(0x1, b"a" * 600, fin=False) + wsraw.frame(0x0, b"a" * 600))
    f = wsraw.read_frame(s)
    assert f[0] == 0x8 and wsraw.close_code(f[1]) == 1009
    s.close()


@pytest.mark.parametrize("length,code", [
    ((1 << 63) - 1, 1009),      # the largest length a header may carry
    ((1 << 64) - 1, 1002),      # top bit set: not a length
    ((16 << 20) + 1, 1009),     # one byte over the default limit
    (1 << 16, 1009),            # the smallest 64-bit length
    (1001, 1009),               # one byte over this server's limit (a 16-bit length)
    (1000, None),               # at the limit: the server waits for the payload
])
def test_worst_frame_lengths_are_refused_from_the_header(echo_factory, length, code):
    """A header alone, claiming the worst lengths: the server closes at once, without waiting
    for the payload, and goes on serving; at the limit it waits for the payload and echoes it."""
    server = echo_factory("--max-message-size", "1000")
    s = wsraw.connect(server.port)
    size = bytes([0x81, 0xFE]) + length.to_bytes(2, "big") if length < (1 << 16) else bytes([0x81, 0xFF]) + length.to_bytes(8, "big")
    s.sendall(size + b"\x01\x02\x03\x04")
    if code is None:
        s.sendall(bytes(1000))  # masked with 01 02 03 04: valid UTF-8 either way (all ASCII)
        f = wsraw.read_frame(s)
        assert f[0] == 0x1 and len(f[1]) == 1000
        s.close()
        return
    f = wsraw.read_frame(s)
    assert f[0] == 0x8 and wsraw.close_code(f[1]) == code
    s.close()

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            await ws.send("still here")
            assert await ws.recv() == "still here"
    run(go())


def test_thousand_concurrent_connections(echo):
    async def one(i):
        async with websockets.connect(f"ws://127.0.0.1:{echo.port}/", compression=None, open_timeout=30) as ws:
            await ws.send(f"message {i}")
            assert await ws.recv() == f"message {i}"
            return True

    async def go():
        results = await asyncio.gather(*(one(i) for i in range(1000)))
        assert all(results) and len(results) == 1000
    run(go())


def test_ipv6_loopback(echo_factory):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    from conftest import Proc
    p = Proc(["echo", "--host", "::1", "--port", "0"], r"listening on ws://\[::1\]:(\d+)/")
    try:
        async def go():
            async with websockets.connect(f"ws://[::1]:{p.port}/") as ws:
                await ws.send("v6")
                assert await ws.recv() == "v6"
        run(go())
    finally:
        p.stop()

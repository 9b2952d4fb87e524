"""Bounds on memory, descriptors and rates: each is enforced with a clear answer, counted in
/metrics, and the server keeps serving."""
import asyncio
import json
import os
import resource
import socket
import time

import websockets

import sb
from sb import Peer, run, wait_until
from test_hardening import healthy, metric


def limit_hits(port, key):
    return metric(port, 'switchboard_limit_hits_total{limit="%s"}' % key) or 0


def test_message_size_is_bounded_per_role_after_decompression(serve_factory):
    server = serve_factory(env={"max_worker_message_bytes": 65536, "max_debug_message_bytes": 1024})

    async def go():
        s, w, c = await sb.pair(server.port)
        # A client may send large results (screenshots): 1 MiB passes.
        await w.send({"type": "worker.command", "id": "big", "command": "screenshot"})
        await c.expect("server.command", id="big")
        await c.send({"type": "client.command_response", "id": "big", "result": {"data": "x" * (1 << 20)}})
        assert len((await w.expect("server.command_result", id="big"))["result"]["data"]) == 1 << 20
        # A deflate bomb from the worker: about 100 bytes on the wire, 200 KB inflated.
        bomb = await websockets.connect(f"{s['websocketUrl']}?role=worker&token={s['workerToken']}", compression="deflate")
        await bomb.send(json.dumps({"type": "worker.hello", "protocolVersion": 1, "pad": "\0" * 200_000}))
        try:
            await asyncio.wait_for(bomb.recv(), 5)
            raise AssertionError("not closed")
        except websockets.exceptions.ConnectionClosed as e:
            assert e.rcvd.code == 1009
        d = await Peer.connect(s, "debug")
        await d.send("x" * 2048)
        assert await d.closed() == 1009
    run(go())
    assert limit_hits(server.port, "max_worker_message_bytes") >= 1
    assert limit_hits(server.port, "max_debug_message_bytes") >= 1
    assert healthy(server.port)


def test_a_sustained_flood_that_gets_some_messages_through_is_closed_with_4029(serve_factory):
    server = serve_factory(env={"rate_per_second": 200, "rate_burst": 20, "rate_close_after_drops": 100, "rate_window_ms": 10_000})

    async def go():
        s, w, c = await sb.pair(server.port)
        # Read what the server answers all along (a client that stops reading would stop
        # seeing the close frame too).
        reader = asyncio.ensure_future(w.closed(timeout=30))
        # 400 messages a second: about half get through, so drops in a row stay short — the
        # drops within the window reach the limit.
        deadline = time.time() + 15
        while time.time() < deadline and not reader.done():
            try:
                await w.send({"type": "worker.cancel", "id": "nothing"})
            except websockets.exceptions.ConnectionClosed:
                break
            await asyncio.sleep(0.0025)
        assert await reader == 4029
        assert any(m.get("code") == "rate_limited" for m in w.seen)
        assert any(m.get("code") == "unknown_command_id" for m in w.seen)   # some got through
    run(go())
    assert limit_hits(server.port, "rate_per_second") > 100


def test_bytes_are_rate_limited_next_to_messages(serve_factory):
    server = serve_factory(env={"rate_bytes_per_second": 10_000, "rate_bytes_burst": 20_000})

    async def go():
        s, w, c = await sb.pair(server.port)
        for _ in range(3):
            await c.send({"type": "client.events", "events": [{"type": "x", "payload": {"pad": "y" * 15_000}}]})
        e = await c.expect_error("rate_limited")
        assert "bytes per second" in e["message"]
    run(go())
    assert limit_hits(server.port, "rate_bytes_per_second") >= 1


def test_debug_viewers_are_rate_limited_too(serve_factory):
    server = serve_factory(env={"rate_per_second": 50, "rate_burst": 10, "rate_close_after_drops": 20})

    async def go():
        s = sb.create(server.port)
        d = await Peer.connect(s, "debug")
        for _ in range(200):
            try:
                await d.send("{}")
            except websockets.exceptions.ConnectionClosed:
                break
        assert await d.closed() == 4029
        assert any(m.get("code") == "rate_limited" for m in d.seen)
    run(go())


def test_the_session_cap_counts_live_sessions_only(serve_factory):
    server = serve_factory("--store", "memory", env={"max_sessions": 2})
    a = sb.create(server.port)
    sb.create(server.port)
    status, body = sb.rest(server.port, "POST", "/v1/sessions", {})
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert sb.rest(server.port, "DELETE", f"/v1/sessions/{a['sessionId']}")[0] == 200
    assert sb.rest(server.port, "POST", "/v1/sessions", {})[0] == 201
    assert limit_hits(server.port, "max_sessions") == 1


def test_connections_per_ip_are_capped(serve_factory):
    server = serve_factory(env={"max_connections_per_ip": 5})
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    extra = socket.create_connection(("127.0.0.1", server.port))
    extra.settimeout(5)
    try:
        assert extra.recv(1) == b""     # closed at once
    except ConnectionResetError:
        pass                            # or reset: closed at once either way
    extra.close()
    for s in socks:
        s.close()
    wait_until(lambda: healthy(server.port), what="healthz after the cap")
    assert limit_hits(server.port, "max_connections_per_ip") >= 1


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_running_out_of_descriptors_pauses_accept_instead_of_spinning(serve_factory):
    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    server = serve_factory("--store", "memory", preexec_fn=low_limit)
    socks = []
    for _ in range(120):     # more than the server's descriptors: the rest wait in the backlog
        socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
    before = cpu_seconds(server.pid)
    time.sleep(1.0)          # measuring CPU use over a second is the point of this test
    used = cpu_seconds(server.pid) - before
    assert used < 0.5, f"the accept path used {used:.2f} s of CPU in 1 s"
    for s in socks:
        s.close()
    wait_until(lambda: healthy(server.port), what="healthz once descriptors are free")
    assert limit_hits(server.port, "accept_retry_ms") >= 1


def test_pipelined_requests_are_answered_iteratively_and_bounded(server):
    n = 20_000
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * n)
    got = b""
    deadline = time.time() + 30
    while got.count(b"HTTP/1.1 200") < n and time.time() < deadline:
        chunk = s.recv(1 << 20)
        assert chunk
        got += chunk
    assert got.count(b"HTTP/1.1 200") == n
    s.close()
    # A client that pipelines without reading: the server stops reading it and stays small.
    rss_before = metric(server.port, "process_resident_memory_bytes")
    t = socket.create_connection(("127.0.0.1", server.port))
    t.setblocking(False)
    sent = 0
    try:
        while sent < 200 << 20:
            sent += t.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    except BlockingIOError:
        pass
    assert sent < 200 << 20, "the server kept reading a client that never reads"
    grown = metric(server.port, "process_resident_memory_bytes") - rss_before
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.0f} MiB"
    assert healthy(server.port)
    t.close()

"""Sessions over real sockets: REST, roles, handshake, lifecycle, commands, errors, close codes."""
import asyncio
import json
import os
import signal
import socket
import time

import pytest

import sb
import wsraw
from sb import Peer, run

CATALOG = {
    "navigate": {"url": "https://example.com", "waitUntil": "load"},
    "reload": {}, "goBack": {}, "goForward": {},
    "waitForNavigation": {"urlPattern": "example\\.com"},
    "click": {"selector": "#login"}, "fill": {"selector": "#u", "value": "alice"},
    "type": {"uid": "e3", "text": "hello"}, "select": {"selector": "#s", "values": ["a", "b"]},
    "hover": {"selector": "a"}, "press": {"key": "Enter"}, "scroll": {"direction": "down", "amount": 200},
    "waitForSelector": {"selector": "#done", "state": "visible", "timeout": 1000},
    "getAttribute": {"selector": "a", "name": "href"}, "textContent": {"selector": "h1"},
    "innerHTML": {"selector": "main"}, "isVisible": {"uid": "e1"}, "evaluate": {"expression": "return 1+1"},
    "url": {}, "title": {}, "content": {}, "screenshot": {"format": "png"}, "extract": {},
    "waitForNetworkIdle": {"idleMs": 100}, "waitForTimeout": {"ms": 10}, "updateStatus": {"heading": "Working"},
}


def test_full_flow_every_command_then_complete(server):
    async def go():
        s = sb.create(server.port, metadata={"user_id": "u_123"})
        w = await Peer.connect(s, "worker")
        assert w.hello["phase"] == "pending" and w.hello["metadata"] == {"user_id": "u_123"}
        assert w.hello["workerConnected"] and not w.hello["clientConnected"]
        c = await Peer.connect(s, "client")
        assert c.hello["phase"] == "active" and "metadata" not in c.hello
        assert c.hello["capture"]["screenshots"]["enabled"] is False
        status, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["phase"] == "active" and info["workerConnected"] and info["clientConnected"]

        for n, (name, params) in enumerate(CATALOG.items(), start=1):
            await w.send({"type": "worker.command", "id": f"c{n}", "command": name, "params": params})
            cmd = await c.expect("server.command")
            assert (cmd["id"], cmd["command"], cmd["params"]) == (f"c{n}", name, params)
            assert cmd["seq"] == n
            result = {"value": name, "nested": {"n": n, "list": [1, "two", None]}}
            await c.send({"type": "client.command_response", "id": f"c{n}", "result": result})
            res = await w.expect("server.command_result")
            assert (res["id"], res["command"], res["result"]) == (f"c{n}", name, result)
            assert res["seq"] == n and res["durationMs"] >= 0

        # A failing command: the client's error reaches the worker.
        await w.send({"type": "worker.command", "id": "bad", "command": "click", "params": {"selector": "#nope"}})
        await c.expect("server.command", id="bad")
        await c.send({"type": "client.command_response", "id": "bad", "error": {"code": "element_not_found", "message": "no element"}})
        res = await w.expect("server.command_result", id="bad")
        assert res["error"] == {"code": "element_not_found", "message": "no element"} and "result" not in res

        await w.send({"type": "worker.complete", "result": {"account_id": "12345"}})
        end_w = await w.expect("server.session_end")
        end_c = await c.expect("server.session_end")
        for e in (end_w, end_c):
            assert e["phase"] == "complete" and e["reason"] == "worker_completed" and e["result"] == {"account_id": "12345"}
        assert await w.closed() == 1000 and await c.closed() == 1000
        status, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["phase"] == "complete" and info["counts"]["commands"] == len(CATALOG) + 1
    run(go())


def test_legacy_command_shapes_reach_the_client_canonical(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "l1", "command": {"action": "wait", "selector": "#a"}})
        cmd = await c.expect("server.command")
        assert cmd["command"] == "waitForSelector" and cmd["params"] == {"selector": "#a"}
        await c.send({"type": "client.command_response", "id": "l1", "error": "plain string"})
        res = await w.expect("server.command_result")
        assert res["command"] == "waitForSelector" and res["error"] == {"code": "command_failed", "message": "plain string"}
        await w.send({"type": "worker.command", "command": {"type": "select", "selector": "#s", "value": "x"}})
        cmd = await c.expect("server.command")
        assert cmd["id"].startswith("cmd_") and cmd["params"] == {"selector": "#s", "values": ["x"]}
    run(go())


def test_command_timeout_cancels_on_the_client_and_drops_late_response(server):
    async def go():
        s, w, c = await sb.pair(server.port, config={"commandTimeoutMs": 300})
        await w.send({"type": "worker.command", "id": "slow", "command": "title"})
        await c.expect("server.command", id="slow")
        res = await w.expect("server.command_result", id="slow")
        assert res["error"]["code"] == "timeout"
        cancel = await c.expect("server.cancel")
        assert cancel["id"] == "slow"
        # The late answer is dropped silently, and the slot is free again.
        await c.send({"type": "client.command_response", "id": "slow", "result": {"value": "late"}})
        await w.send({"type": "worker.command", "id": "next", "command": "url", "timeoutMs": 5000})
        cmd = await c.expect("server.command", id="next")
        assert cmd["timeoutMs"] == 5000
        assert not [m for m in c.seen if m.get("type") == "server.error"]
    run(go())


def test_worker_cancel(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "k", "command": "evaluate", "params": {"expression": "return 1"}})
        await c.expect("server.command", id="k")
        await w.send({"type": "worker.cancel", "id": "k"})
        res = await w.expect("server.command_result", id="k")
        assert res["error"]["code"] == "cancelled"
        assert (await c.expect("server.cancel"))["id"] == "k"
    run(go())


def test_command_waits_for_an_absent_client(server):
    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker")
        await w.send({"type": "worker.command", "id": "early", "command": "url"})
        await asyncio.sleep(0.2)
        c = await Peer.connect(s, "client")
        replay = await c.expect("server.replay")
        assert [m["id"] for m in replay["messages"]] == ["early"] and replay["complete"] is True
        await c.send({"type": "client.command_response", "id": "early", "result": {"value": "https://x"}})
        assert (await w.expect("server.command_result"))["result"] == {"value": "https://x"}
    run(go())


def test_every_server_error_code(server):
    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker", hello=False)
        await w.send({"type": "worker.command", "command": "url"})
        await w.expect_error("hello_required")
        await w.send({"type": "worker.hello"})
        await w.expect("server.hello")
        await w.send({"type": "worker.hello"})
        await w.expect_error("invalid_message")
        await w.send({"type": "client.events", "events": []})
        await w.expect_error("unknown_message_type")
        await w.send({"type": "worker.launch"})
        await w.expect_error("unknown_message_type")
        await w.send({"type": "worker.cancel"})
        await w.expect_error("invalid_message")
        await w.send({"type": "worker.command", "id": "v", "command": "click", "params": {"selector": "a", "uid": "e1"}})
        e = await w.expect_error("invalid_command")
        assert e["id"] == "v" and e["details"]["issues"][0]["path"] == "params"
        await w.send({"type": "worker.command", "id": "v2", "command": "navigate", "params": {}})
        e = await w.expect_error("invalid_command")
        assert e["details"]["issues"] == [{"path": "params.url", "message": "required"}]
        await w.send({"type": "worker.complete"})
        await w.expect_error("invalid_phase")
        await w.send({"type": "worker.cancel", "id": "never"})
        await w.expect_error("unknown_command_id")
        await w.send({"type": "worker.command", "id": "p1", "command": "url"})
        await w.send({"type": "worker.command", "id": "p2", "command": "url"})
        e = await w.expect_error("command_pending")
        assert e["id"] == "p2" and e["details"]["pendingId"] == "p1"
        c = await Peer.connect(s, "client")
        await c.expect("server.replay")
        await c.send({"type": "client.command_response", "id": "zzz", "result": {}})
        await c.expect_error("unknown_command_id")
        await c.send({"type": "worker.command", "command": "url"})
        await c.expect_error("unknown_message_type")
        await c.send({"type": "client.command_response", "id": "p1", "result": {}})
        await w.expect("server.command_result", id="p1")
        await w.send({"type": "worker.command", "id": "p1", "command": "url"})
        await w.expect_error("duplicate_command_id")
        d = await Peer.connect(s, "debug")
        await d.expect("server.hello")
        await d.send("not even json")
        await d.expect_error("read_only")
        # Every error to the worker and client carried a seq once the hello was accepted.
        errors = [m for m in w.seen if m.get("type") == "server.error"]
        assert errors[0].get("seq") is None and all(isinstance(m["seq"], int) for m in errors[1:])
    run(go())


def test_rate_limit_then_4029(serve_factory):
    server = serve_factory("--rate-per-second", "10", "--rate-burst", "20", env={"rate_close_after_drops": 20})

    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker")
        for _ in range(60):
            await w.send({"type": "worker.cancel", "id": "none"})
        await w.expect("server.error", code="rate_limited")
        assert await w.closed() == 4029
    run(go())


def test_pending_command_resolved_session_terminal_on_delete(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "x", "command": "content"})
        await c.expect("server.command")
        status, info = sb.rest(server.port, "DELETE", f"/v1/sessions/{s['sessionId']}")
        assert status == 200 and info["phase"] == "failed" and info["reason"] == "cancelled"
        end = await w.expect("server.session_end")
        assert end["phase"] == "failed" and end["error"]["code"] == "cancelled"
        res = await w.expect("server.command_result", id="x")
        assert res["error"]["code"] == "session_terminal"
        assert await w.closed() == 1000 and await c.closed() == 1000
        # DELETE is idempotent; a terminal session answers a hello then ends.
        assert sb.rest(server.port, "DELETE", f"/v1/sessions/{s['sessionId']}")[1]["phase"] == "failed"
        again = await Peer.connect(s, "worker")
        assert again.hello["phase"] == "failed"
        assert (await again.expect("server.session_end"))["reason"] == "cancelled"
        assert await again.closed() == 1000
    run(go())


def test_worker_fail(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.fail", "error": {"message": "site down"}})
        assert (await c.expect("server.session_end"))["error"] == {"message": "site down"}
        assert await c.closed() == 1000
    run(go())


@pytest.mark.parametrize("message,code", [
    ("this is not json", 4000),
    ("[1,2]", 4000),
    (json.dumps({"no": "type"}), 4000),
    (b"\x01\x02", 1003),
])
def test_envelope_close_codes(server, message, code):
    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker")
        await w.send(message)
        assert await w.closed() == code
    run(go())


def test_unsupported_version_4002(server):
    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker", hello=False)
        await w.send({"type": "worker.hello", "protocolVersion": 2})
        e = await w.expect_error("unsupported_protocol_version")
        assert e["details"] == {"min": 1, "max": 1}
        assert await w.closed() == 4002
    run(go())


def test_hello_timeout_4003(serve_factory):
    server = serve_factory("--hello-timeout-ms", "300")

    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker", hello=False)
        assert await w.closed(timeout=5) == 4003
    run(go())


def test_second_connection_replaces_first_4001(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        w2 = await Peer.connect(s, "worker")
        assert await w.closed() == 4001
        await w2.send({"type": "worker.command", "id": "after", "command": "url"})
        await c.expect("server.command", id="after")
    run(go())


def test_message_too_big_1009(serve_factory):
    server = serve_factory("--max-message-size", "4096")

    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker")
        await w.send({"type": "worker.command", "command": "evaluate", "params": {"expression": "x" * 5000}})
        assert await w.closed() == 1009
    run(go())


def test_shutdown_closes_peers_1001(serve_factory):
    server = serve_factory()

    async def go():
        s, w, c = await sb.pair(server.port)
        server.signal(signal.SIGTERM)
        assert await w.closed() == 1001 and await c.closed() == 1001
    run(go())
    assert server.wait() == 0


def test_connect_timeout_expires_session(server):
    async def go():
        s = sb.create(server.port, config={"connectTimeoutMs": 200})
        await asyncio.sleep(0.6)
        status, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["phase"] == "expired" and info["reason"] == "connect_timeout"
    run(go())


def test_disconnect_grace_expires_session(server):
    async def go():
        s, w, c = await sb.pair(server.port, config={"disconnectGracePeriodMs": 300})
        await c.close()
        end = await w.expect("server.session_end", timeout=5)
        assert end["phase"] == "expired" and end["reason"] == "disconnect_grace"
    run(go())


def test_reconnect_within_grace_keeps_session(server):
    async def go():
        s, w, c = await sb.pair(server.port, config={"disconnectGracePeriodMs": 800})
        await c.close()
        await asyncio.sleep(0.3)
        c2 = await Peer.connect(s, "client")
        await asyncio.sleep(0.8)
        status, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["phase"] == "active"
    run(go())


def test_session_duration_expires_active_session(server):
    async def go():
        s, w, c = await sb.pair(server.port, config={"sessionDurationMs": 500})
        end = await w.expect("server.session_end", timeout=5)
        assert end["reason"] == "session_timeout"
    run(go())


# REST -------------------------------------------------------------------------------------

def test_rest_auth_validation_and_pagination(server):
    p = server.port
    assert sb.rest(p, "POST", "/v1/sessions", {}, key=None)[0] == 401
    assert sb.rest(p, "POST", "/v1/sessions", {}, key="wrong")[0] == 401
    status, body = sb.rest(p, "POST", "/v1/sessions", {"config": {"commandTimeoutMs": -5, "sessionDurationMs": 10 ** 12}})
    assert status == 400 and body["error"]["code"] == "validation_error"
    assert {i["path"] for i in body["error"]["issues"]} == {"config.commandTimeoutMs", "config.sessionDurationMs"}
    assert sb.rest(p, "POST", "/v1/sessions", raw=b"{oops")[0] == 400
    assert sb.rest(p, "POST", "/v1/sessions", raw=b"x" * (2 << 20))[0] == 413
    status, legacy = sb.rest(p, "POST", "/v1/sessions", {"timeout": 60})
    assert status == 201 and legacy["phase"] == "created"
    assert legacy["websocketUrl"] == f"ws://127.0.0.1:{p}/sessions/{legacy['sessionId']}/ws"
    assert len(legacy["workerToken"]) >= 24 and legacy["workerToken"] != legacy["clientToken"]
    _, got = sb.rest(p, "GET", f"/v1/sessions/{legacy['sessionId']}")
    assert got["expiresAt"] - got["createdAt"] == 60000
    assert "workerToken" not in got
    ids = [sb.create(p)["sessionId"] for _ in range(5)]
    _, page1 = sb.rest(p, "GET", "/v1/sessions?limit=3")
    assert [x["sessionId"] for x in page1["sessions"]] == ids[::-1][:3]
    _, page2 = sb.rest(p, "GET", f"/v1/sessions?limit=3&cursor={page1['next']}")
    assert [x["sessionId"] for x in page2["sessions"]] == ids[::-1][3:] + [legacy["sessionId"]]
    assert page2["next"] is None
    sb.rest(p, "DELETE", f"/v1/sessions/{ids[0]}")
    _, failed = sb.rest(p, "GET", "/v1/sessions?phase=failed")
    assert [x["sessionId"] for x in failed["sessions"]] == [ids[0]]
    assert sb.rest(p, "GET", "/v1/sessions/sess_unknown")[0] == 404
    assert sb.rest(p, "GET", "/healthz", key=None)[0] == 200
    assert sb.rest(p, "GET", "/version", key=None)[1]["protocolVersion"] == 1


def test_websocket_refusals_before_upgrade(server):
    s = sb.create(server.port)
    sid = s["sessionId"]
    def status(path):
        raw = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        code, _, body = wsraw.http(server.port, raw.encode())
        if code >= 400:
            assert json.loads(body)["error"]["code"]
            assert s["workerToken"] not in body.decode()
        return code
    assert status(f"/sessions/{sid}/ws?token={s['workerToken']}") == 400
    assert status(f"/sessions/{sid}/ws?role=admin&token={s['workerToken']}") == 400
    assert status(f"/sessions/{sid}/ws?role=worker") == 400
    assert status(f"/sessions/{sid}/ws?role=worker&token={s['workerToken']}") == 101
    assert status(f"/sessions/{sid}/ws?role=client&token={s['workerToken']}") == 401
    assert status(f"/sessions/{sid}/ws?role=worker&token={s['clientToken']}") == 401
    assert status(f"/sessions/sess_nope/ws?role=worker&token={s['workerToken']}") == 404


def test_token_in_authorization_header_and_debug_limit(server):
    async def go():
        import websockets
        s = sb.create(server.port)
        ws = await websockets.connect(f"{s['websocketUrl']}?role=worker", additional_headers={"Authorization": "Bearer " + s["workerToken"]})
        await ws.send(json.dumps({"type": "worker.hello"}))
        assert json.loads(await ws.recv())["type"] == "server.hello"
        await ws.close()
        debugs = [await Peer.connect(s, "debug") for _ in range(8)]
        with pytest.raises(Exception) as exc:
            await Peer.connect(s, "debug")
        assert "429" in str(exc.value)
    run(go())


def test_debug_sees_live_traffic(server):
    async def go():
        s = sb.create(server.port)
        d = await Peer.connect(s, "debug")
        hello = await d.recv()
        assert hello["type"] == "server.hello" and hello["role"] == "debug"
        w = await Peer.connect(s, "worker")
        c = await Peer.connect(s, "client")
        await w.send({"type": "worker.command", "id": "d1", "command": "url"})
        await c.expect("server.command")
        await c.send({"type": "client.command_response", "id": "d1", "result": {"value": "u"}})
        await w.expect("server.command_result")
        dirs = []
        while len(dirs) < 20:
            m = await d.recv()
            dirs.append((m["direction"], m["message"].get("type")))
            if m["message"].get("type") == "server.command_result":
                break
        assert ("worker_to_server", "worker.command") in dirs
        assert ("server_to_client", "server.command") in dirs
        assert ("client_to_server", "client.command_response") in dirs
        assert ("server", "server.phase") in dirs
    run(go())


def test_traffic_log_redacts_and_tail_prints_it(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "f1", "command": "fill", "params": {"selector": "#pw", "value": "hunter2"}})
        await c.expect("server.command")
        await c.send({"type": "client.command_response", "id": "f1", "result": {"ok": True}})
        await w.expect("server.command_result")
        await w.send({"type": "worker.command", "id": "big", "command": "evaluate", "params": {"expression": "y" * 5000}})
        await c.expect("server.command")
        return s
    s = run(go())
    log = os.path.join(server.data_dir, "traffic.jsonl")
    sb.wait_until(lambda: "cut: 5000 bytes" in open(log).read(), what="the last command's line")
    text = open(log).read()
    assert "hunter2" not in text
    assert "[redacted: 7 chars]" in text
    assert "y" * 1100 not in text and "cut: 5000 bytes" in text
    lines = [json.loads(l) for l in text.splitlines()]
    msg = [l for l in lines if l.get("type") == "worker.command" and l.get("id") == "f1"][0]
    assert msg["direction"] == "worker_to_server" and msg["session"] == s["sessionId"] and msg["bytes"] > 0
    assert any(l.get("event") == "phase" and l["to"] == "active" for l in lines)
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "tail", "--file", log, "--session", s["sessionId"]], capture_output=True, text=True, check=True).stdout
    assert "worker -> server worker.command id=f1" in out and "phase pending -> active" in out

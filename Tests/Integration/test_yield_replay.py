"""Yield to user, telemetry, reconnection replay and debug viewers over real sockets."""
import asyncio
import json

import pytest

import sb
from sb import Peer, run


def nav(url, main=True):
    return {"type": "navigation", "ts": 1767225600123, "source": "client", "payload": {"url": url, "isMainFrame": main}}


async def events(c, seq, *evs):
    await c.send({"type": "client.events", "clientSeq": seq, "events": list(evs)})
    ack = await c.expect("server.ack")
    assert ack["clientSeq"] == seq


def kill(peer):
    """Cuts the TCP connection without a close frame."""
    peer.ws.transport.abort()


# Yield ------------------------------------------------------------------------------------

def test_yield_resolved_by_url_already_current(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await events(c, 1, nav("https://example.com/dashboard/home"))
        await w.send({"type": "worker.yield_to_user", "id": "y1", "message": "Please sign in",
                      "conditions": [{"type": "url", "pattern": "https://example\\.com/dashboard.*"}]})
        on = await c.expect("server.set_interactive")
        assert on["interactive"] is True and on["yieldId"] == "y1" and on["message"] == "Please sign in"
        res = await w.expect("server.command_result", id="y1")
        assert res["result"]["matched"] is True and res["result"]["conditionIndex"] == 0
        assert res["result"]["event"]["payload"]["url"] == "https://example.com/dashboard/home"
        off = await c.expect("server.set_interactive")
        assert off == {"type": "server.set_interactive", "seq": off["seq"], "interactive": False, "yieldId": "y1"}
    run(go())


def test_yield_resolved_by_later_navigation_and_blocks_commands(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y2",
                      "conditions": [{"type": "url", "pattern": "/done$"}, {"type": "url", "pattern": "/other$"}]})
        await c.expect("server.set_interactive")
        await w.send({"type": "worker.command", "id": "blocked", "command": "url"})
        e = await w.expect_error("command_pending")
        assert e["details"]["pendingId"] == "y2"
        _, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["interactive"] is True and info["pending"] == {"id": "y2", "kind": "yield"}
        await events(c, 1, nav("https://a.b/step"), nav("https://a.b/other", main=False), nav("https://a.b/other"))
        res = await w.expect("server.command_result", id="y2")
        assert res["result"]["conditionIndex"] == 1
    run(go())


def test_yield_resolved_by_network_response_with_captured_body(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y3", "conditions": [
            {"type": "networkRequest", "url": "api/login$", "method": "post", "successfulOnly": True,
             "bodyContains": "token", "captureBody": True}]})
        await c.expect("server.set_interactive")
        bad = {"type": "net.response", "payload": {"url": "https://x.io/api/login", "method": "POST", "status": 401, "body": "{\"token\":null}"}}
        good = {"type": "net.response", "payload": {"url": "https://x.io/api/login", "method": "POST", "status": 200, "body": "{\"token\":\"abc\"}"}}
        await events(c, 1, bad)
        await c.send({"type": "client.network_activity", "clientSeq": 2, "entries": [good["payload"]]})
        res = await w.expect("server.command_result", id="y3")
        assert res["result"]["matched"] and res["result"]["body"] == "{\"token\":\"abc\"}"
        assert res["result"]["event"]["type"] == "net.response"
    run(go())


def test_yield_resolved_by_selector_condition(server):
    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker")
        c = await Peer.connect(s, "client", capabilities=["selectorConditions"])
        await w.send({"type": "worker.yield_to_user", "id": "y4", "conditions": [
            {"type": "url", "pattern": "never"}, {"type": "selector", "selector": "#done"}]})
        on = await c.expect("server.set_interactive")
        assert on["conditions"] == [{"index": 1, "type": "selector", "selector": "#done", "state": "visible"}]
        await events(c, 1, {"type": "condition.matched", "payload": {"yieldId": "y4", "index": 1}})
        res = await w.expect("server.command_result", id="y4")
        assert res["result"]["conditionIndex"] == 1
    run(go())


def test_optional_yield_times_out_unmatched_and_required_one_errors(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y5", "optional": True, "timeoutMs": 200,
                      "conditions": [{"type": "url", "pattern": "x"}]})
        res = await w.expect("server.command_result", id="y5")
        assert res["result"] == {"matched": False}
        assert (await c.expect("server.set_interactive", interactive=False))["yieldId"] == "y5"
        await w.send({"type": "worker.yield_to_user", "id": "y6", "timeoutMs": 200, "conditions": [{"type": "url", "pattern": "x"}]})
        res = await w.expect("server.command_result", id="y6")
        assert res["error"]["code"] == "timeout"
        assert (await c.expect("server.set_interactive", interactive=False))["yieldId"] == "y6"
        _, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["phase"] == "active" and info["pending"] is None
    run(go())


def test_cancelled_yield(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y7", "conditions": [{"type": "url", "pattern": "x"}]})
        await c.expect("server.set_interactive", interactive=True)
        await w.send({"type": "worker.cancel", "id": "y7"})
        assert (await w.expect("server.command_result", id="y7"))["error"]["code"] == "cancelled"
        await c.expect("server.set_interactive", interactive=False)
    run(go())


def test_invalid_yield_pattern_is_invalid_command(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "bad", "conditions": [{"type": "url", "pattern": "(["}]})
        e = await w.expect_error("invalid_command")
        assert e["details"]["issues"][0]["path"] == "conditions[0].pattern"
    run(go())


# Telemetry --------------------------------------------------------------------------------

def test_telemetry_stored_deduped_filtered_and_subscribed(server):
    async def go():
        s = sb.create(server.port, config={"eventFilter": {"types": ["navigation", "console"]}})
        w = await Peer.connect(s, "worker", events=["navigation"])
        c = await Peer.connect(s, "client")
        assert c.hello["eventFilter"] == {"types": ["navigation", "console"]} and c.hello["lastClientSeq"] is None
        await events(c, 1, nav("https://a.b/1"), {"type": "net.request", "payload": {"url": "u", "method": "GET"}})
        await events(c, 1, nav("https://a.b/dup"))  # retransmission: acked, dropped
        await c.send({"type": "client.events", "clientSeq": 2, "events": [{"type": "navigation", "url": "https://a.b/flat", "ts": "2026-01-01T00:00:00.000Z"}]})
        await c.expect("server.ack")
        await c.send({"type": "client.console_activity", "clientSeq": 3, "entries": [{"level": "log", "text": "hi"}]})
        await c.expect("server.ack")
        ev = await w.expect("server.event")
        assert ev["event"]["type"] == "navigation" and ev["event"]["eventSeq"] == 1
        status, body = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
        got = [(e["type"], e["payload"].get("url") or e["payload"].get("text")) for e in body["events"]]
        assert got == [("navigation", "https://a.b/1"), ("navigation", "https://a.b/flat"), ("console", "hi")]
        assert body["events"][1]["ts"] == 1767225600000 and body["next"] is None
        _, page = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events?after=1&limit=1&types=navigation")
        assert [e["eventSeq"] for e in page["events"]] == [2] and page["next"] is None
        _, page = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events?after=1&limit=1")
        assert [e["eventSeq"] for e in page["events"]] == [2] and page["next"] == 2
        await c.send({"type": "client.events", "clientSeq": 4, "events": [{"type": "x"}] * 1001})
        await c.expect_error("invalid_message")
        c2 = await Peer.connect(s, "client")
        assert c2.hello["lastClientSeq"] == 3
    run(go())


# Replay after cut connections -------------------------------------------------------------

def test_cut_before_client_got_the_command(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        kill(c)
        await asyncio.sleep(0.2)
        await w.send({"type": "worker.command", "id": "r1", "command": "title"})
        c2 = await Peer.connect(s, "client", lastSeq=0)
        rep = await c2.expect("server.replay")
        assert [m["id"] for m in rep["messages"]] == ["r1"] and rep["complete"] and rep["fromSeq"] == rep["toSeq"] == 1
        await c2.send({"type": "client.command_response", "id": "r1", "result": {"value": "T"}})
        assert (await w.expect("server.command_result", id="r1"))["result"] == {"value": "T"}
    run(go())


def test_cut_after_execution_before_worker_got_result(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "r2", "command": "url"})
        cmd = await c.expect("server.command")
        kill(w)
        await asyncio.sleep(0.2)
        await c.send({"type": "client.command_response", "id": "r2", "result": {"value": "https://done"}})
        await asyncio.sleep(0.2)
        w2 = await Peer.connect(s, "worker", lastSeq=0)
        rep = await w2.expect("server.replay")
        assert [(m["type"], m["id"]) for m in rep["messages"]] == [("server.command_result", "r2")]
        # The client reconnects too: the answered command is not delivered again.
        kill(c)
        c2 = await Peer.connect(s, "client", lastSeq=0)
        await w2.send({"type": "worker.command", "id": "r3", "command": "title"})
        m = await c2.recv()
        assert m["type"] == "server.command" and m["id"] == "r3"
        assert not [x for x in c2.seen if x.get("type") == "server.replay" and any(y.get("id") == "r2" for y in x["messages"])]
    run(go())


def test_pending_command_redelivered_with_its_id(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "r4", "command": "content"})
        cmd = await c.expect("server.command")
        kill(c)  # received, but not processed
        c2 = await Peer.connect(s, "client", lastSeq=cmd["seq"] - 1)
        rep = await c2.expect("server.replay")
        assert rep["messages"][0]["id"] == "r4" and rep["messages"][0]["seq"] == cmd["seq"]
        await c2.send({"type": "client.command_response", "id": "r4", "result": {"value": "<html>"}})
        await w.expect("server.command_result", id="r4")
    run(go())


def test_cut_mid_yield_client_is_made_interactive_again(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y8", "conditions": [{"type": "url", "pattern": "/ok"}]})
        on = await c.expect("server.set_interactive")
        kill(c)
        # Reconnecting after it processed the set_interactive: hello says interactive, no replay needed.
        c2 = await Peer.connect(s, "client", lastSeq=on["seq"])
        assert c2.hello["interactive"] is True and c2.hello["yieldId"] == "y8"
        kill(c2)
        # Reconnecting before it processed it: the set_interactive is in the replay.
        c3 = await Peer.connect(s, "client", lastSeq=on["seq"] - 1)
        rep = await c3.expect("server.replay")
        assert [m["type"] for m in rep["messages"]] == ["server.set_interactive"]
        await events(c3, 1, nav("https://x/ok"))
        assert (await w.expect("server.command_result", id="y8"))["result"]["matched"]
    run(go())


def test_cut_with_unacked_telemetry_stores_each_event_once(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        for n in (1, 2, 3):
            await c.send({"type": "client.events", "clientSeq": n, "events": [nav(f"https://e/{n}")]})
        kill(c)  # acks were never read
        await asyncio.sleep(0.2)
        c2 = await Peer.connect(s, "client", lastSeq=0)
        assert c2.hello["lastClientSeq"] == 3
        # A client that does not trust lastClientSeq resends everything: all deduplicated.
        for n in (2, 3):
            await c2.send({"type": "client.events", "clientSeq": n, "events": [nav(f"https://e/{n}")]})
            await c2.expect("server.ack", clientSeq=n)
        await events(c2, 4, nav("https://e/4"))
        _, body = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
        assert [e["payload"]["url"] for e in body["events"]] == [f"https://e/{n}" for n in (1, 2, 3, 4)]
    run(go())


def test_replay_complete_false_only_when_tail_exceeded(serve_factory):
    server = serve_factory("--replay-max-messages", "5")

    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker", events=["console"])
        c = await Peer.connect(s, "client")
        await events(c, 1, {"type": "console", "payload": {"n": 0}})
        first = await w.expect("server.event")
        kill(w)
        await asyncio.sleep(0.1)
        for n in range(2, 5):  # 3 more events: within the tail of 5
            await events(c, n, {"type": "console", "payload": {"n": n}})
        w2 = await Peer.connect(s, "worker", events=["console"], lastSeq=first["seq"])
        rep = await w2.expect("server.replay")
        assert rep["complete"] is True and len(rep["messages"]) == 3
        kill(w2)
        await asyncio.sleep(0.1)
        for n in range(5, 13):  # 8 more: the tail of 5 no longer holds them all
            await events(c, n, {"type": "console", "payload": {"n": n}})
        w3 = await Peer.connect(s, "worker", lastSeq=rep["toSeq"])
        rep2 = await w3.expect("server.replay")
        assert rep2["complete"] is False and len(rep2["messages"]) == 5
        assert rep2["toSeq"] == rep["toSeq"] + 8 and rep2["fromSeq"] == rep2["toSeq"] - 4
        _, metrics = sb.rest(server.port, "GET", "/metrics")
        assert "switchboard_replays_incomplete_total 1" in metrics
    run(go())


# Debug ------------------------------------------------------------------------------------

def test_debug_joining_late_with_since_0_sees_the_same_sequence(server):
    async def go():
        s = sb.create(server.port)
        early = await Peer.connect(s, "debug")
        await early.expect("server.hello")
        w = await Peer.connect(s, "worker")
        c = await Peer.connect(s, "client")
        await w.send({"type": "worker.command", "id": "d1", "command": "title"})
        await c.expect("server.command")
        await c.send({"type": "client.command_response", "id": "d1", "result": {"value": "x"}})
        await w.expect("server.command_result")
        await events(c, 1, nav("https://d/1"))
        import websockets
        ws = await websockets.connect(f"{s['websocketUrl']}?role=debug&token={s['workerToken']}&since=0")
        hello = json.loads(await ws.recv())
        assert hello["type"] == "server.hello" and hello["role"] == "debug"
        _, journal = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/journal")
        n = len(journal["entries"])
        history = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(n)]
        live_early = []
        while len(live_early) < n:
            live_early.append(await early.recv())
        strip = lambda xs: [(x["direction"], x["message"]) for x in xs]
        assert strip(history) == strip(live_early)
        assert strip(history) == [(e["direction"], e["message"]) for e in journal["entries"]]
        assert [e["n"] for e in journal["entries"]] == list(range(1, n + 1))
        # Then live traffic follows on both.
        await w.send({"type": "worker.command", "id": "d2", "command": "url"})
        a = json.loads(await asyncio.wait_for(ws.recv(), 5))
        b = await early.recv()
        assert a["message"] == b["message"] and a["message"]["id"] == "d2"
        _, page = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/journal?after=2&limit=2")
        assert [e["n"] for e in page["entries"]] == [3, 4] and page["next"] == 4
        await ws.close()
    run(go())


def test_debug_sees_session_end_envelopes_then_its_own(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        d = await Peer.connect(s, "debug")
        await d.expect("server.hello")
        await w.send({"type": "worker.complete"})
        seen = []
        while True:
            m = await d.recv()
            seen.append(m)
            if m.get("type") == "server.session_end":
                break
        ends = [m["direction"] for m in seen if m.get("message", {}).get("type") == "server.session_end"]
        assert sorted(ends) == ["server_to_client", "server_to_worker"]
        assert await d.closed() == 1000
    run(go())

"""Hostile input from peers: every one is answered with an error or a close code, and the
server keeps serving every other session."""
import asyncio
import json
import signal
import time

import sb
from conftest import Proc, API_KEY
from sb import Peer, run, wait_until
from test_durability import restart

HUGE = ["1e19", "1e300", "-1e19", "9223372036854775808", "1e400", "9223372036854775807", "-9223372036854775808"]


def healthy(port):
    try:
        status, body = sb.rest(port, "GET", "/healthz")
    except OSError:      # refused or reset (e.g. while a connection cap is in force)
        return False
    return status == 200 and body == {"status": "ok"}


def test_out_of_range_timestamps_from_a_client_are_invalid_not_fatal(server):
    async def go():
        s = sb.create(server.port)
        # Before the hello: the server answers, it does not die.
        c = await Peer.connect(s, "client", hello=False)
        await c.send('{"type":"client.events","events":[{"type":"x","ts":1e19}]}')
        e = await c.expect("server.error")
        assert e["code"] in ("hello_required", "invalid_message")
        await c.send({"type": "client.hello", "protocolVersion": 1})
        await c.expect("server.hello")
        for n in HUGE:
            await c.send('{"type":"client.events","clientSeq":1,"events":[{"type":"x","ts":%s}]}' % n)
            assert "ts" in (await c.expect_error("invalid_message"))["message"]
            for t in ("client.console_activity", "client.network_activity", "client.sdk_log"):
                await c.send('{"type":"%s","entries":[{"ts":%s}]}' % (t, n))
                await c.expect_error("invalid_message")
        # Nothing of it was stored, and the session still works.
        await c.send({"type": "client.events", "clientSeq": 1, "events": [{"type": "ok", "ts": 5}]})
        await c.expect("server.ack", clientSeq=1)
        _, ev = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
        assert [(e["type"], e["ts"]) for e in ev["events"]] == [("ok", 5)]
    run(go())
    assert healthy(server.port)


def test_out_of_range_timeouts_from_a_worker_are_refused(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        for n in HUGE + ["1e14"]:
            await w.send('{"type":"worker.command","id":"t","command":"url","timeoutMs":%s}' % n)
            await w.expect_error("invalid_message")
            await w.send('{"type":"worker.yield_to_user","conditions":[{"type":"url","pattern":"x"}],"timeoutMs":%s}' % n)
            await w.expect_error("invalid_message")
            for cmd in ('"waitForNavigation","params":{"urlPattern":"x","timeout":%s}',
                        '"waitForSelector","params":{"selector":"#a","timeout":%s}',
                        '"waitForNetworkIdle","params":{"timeout":%s}'):
                await w.send('{"type":"worker.command","command":%s}' % (cmd % n))
                e = await w.expect_error("invalid_command")
                assert e["details"]["issues"][0]["path"].startswith("params.")
        # The session is intact: a normal command still relays.
        await w.send({"type": "worker.command", "id": "ok", "command": "url"})
        await c.expect("server.command", id="ok")
    run(go())
    assert healthy(server.port)


def test_a_catastrophic_pattern_cannot_stall_the_loop(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        other, w2, c2 = await sb.pair(server.port)
        await w.send({"type": "worker.yield_to_user", "id": "y", "conditions": [{"type": "url", "pattern": "^(a+)+$"}]})
        await c.expect("server.set_interactive", interactive=True)
        evil = "a" * 50_000 + "!"
        started = time.monotonic()
        await c.send({"type": "client.events", "clientSeq": 1, "events": [{"type": "navigation", "payload": {"url": evil}}]})
        await c.expect("server.ack", clientSeq=1)
        # Another session is served meanwhile, and the yield did not resolve on that URL.
        await w2.send({"type": "worker.command", "id": "x", "command": "url"})
        await c2.expect("server.command", id="x")
        assert time.monotonic() - started < 5
        await c.send({"type": "client.events", "clientSeq": 2, "events": [{"type": "navigation", "payload": {"url": "aaaa"}}]})
        res = await w.expect("server.command_result", id="y")
        assert res["result"]["matched"] and res["result"]["event"]["payload"]["url"] == "aaaa"
        # Patterns that cannot be matched in linear time are refused when the yield is made.
        await w.send({"type": "worker.yield_to_user", "conditions": [{"type": "url", "pattern": "(a)\\1"}]})
        await w.expect_error("invalid_command")
    run(go())


def test_a_restored_session_whose_deadline_passed_while_down(serve_factory):
    server = serve_factory()
    state = {}

    async def before():
        s, w, c = await sb.pair(server.port, config={"disconnectGracePeriodMs": 600_000})
        await w.send({"type": "worker.command", "id": "slow", "command": "title", "timeoutMs": 1000})
        cmd = await c.expect("server.command", id="slow")
        _, j = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/journal?limit=1000")
        state.update(s=s, worker_seq=w.hello["currentSeq"], deadline=time.time() + 1.0, client_seq=cmd["seq"],
                     journal=[e["n"] for e in j["entries"]])
    run(before())
    s = state["s"]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    while time.time() < state["deadline"] + 0.3:    # the deadline passes while the server is down
        time.sleep(0.05)
    server2 = restart_only(server)
    try:
        # The restored timer fires before any peer returns; then the worker reconnects.
        deadline = time.time() + 10
        while sb.rest(server2.port, "GET", f"/v1/sessions/{s['sessionId']}")[1]["pending"] is not None:
            assert time.time() < deadline
            time.sleep(0.05)

        async def after():
            w = await Peer.connect(s, "worker", lastSeq=state["worker_seq"])
            rep = await w.expect("server.replay")
            assert rep["complete"] is True
            results = [m for m in rep["messages"] if m["type"] == "server.command_result"]
            assert [(m["id"], m["error"]["code"]) for m in results] == [("slow", "timeout")]
            assert all(m["seq"] > state["worker_seq"] for m in rep["messages"])
            # The client learns of the cancellation with a seq it has never seen.
            c = await Peer.connect(s, "client", lastSeq=state["client_seq"])
            rep = await c.expect("server.replay")
            cancels = [m for m in rep["messages"] if m["type"] == "server.cancel"]
            assert [m["id"] for m in cancels] == ["slow"] and cancels[0]["seq"] > state["client_seq"]
        run(after())
        _, j = sb.rest(server2.port, "GET", f"/v1/sessions/{s['sessionId']}/journal?limit=1000")
        ns = [e["n"] for e in j["entries"]]
        # No entry was overwritten: the old numbers are all there, the new ones follow.
        assert ns == sorted(set(ns)) and ns[:len(state["journal"])] == state["journal"]
        assert len(ns) > len(state["journal"])
    finally:
        server2.stop()


def restart_only(server, *extra):
    p = Proc(["serve", "--host", "127.0.0.1", "--port", str(server.port), "--data-dir", server.data_dir, "--api-key", API_KEY] + list(extra),
             r"listening on http://127\.0\.0\.1:(\d+)")
    p.data_dir = server.data_dir
    return p


def log_lines(server):
    import os
    with open(os.path.join(server.data_dir, "traffic.jsonl")) as f:
        return [json.loads(line) for line in f]     # every line parses, or this raises


def test_log_lines_are_always_json_and_user_input_is_always_redacted(server):
    secret = "hunter2-secret"

    async def go():
        s = sb.create(server.port)
        w = await Peer.connect(s, "worker", hello=False)
        # Before the hello, a fill is still redacted.
        await w.send({"type": "worker.command", "command": "fill", "params": {"selector": "#p", "value": secret}})
        await w.expect_error("hello_required")
        await w.send({"type": "worker.hello", "protocolVersion": 1})
        await w.expect("server.hello")
        c = await Peer.connect(s, "client")
        # A fill that fails validation, and a type whose params are not an object.
        await w.send({"type": "worker.command", "command": "fill", "params": {"value": secret}})
        await w.expect_error("invalid_command")
        await w.send({"type": "worker.command", "command": "type", "params": {"text": secret, "delayMs": -1, "selector": "a"}})
        await w.expect_error("invalid_command")
        # A command written over several lines (JSON allows whitespace between tokens): the
        # log line it makes is still one line.
        await w.send(json.dumps({"type": "worker.command", "command": "navigate", "params": {"url": "https://example.com/"}}, indent=2))
        await c.expect("server.command", command="navigate")
        # A small network body from the client.
        await c.send({"type": "client.events", "clientSeq": 1,
                      "events": [{"type": "net.response", "payload": {"url": "https://x", "status": 200, "body": secret}}]})
        await c.expect("server.ack", clientSeq=1)
        # Input that is not JSON: closed with 4000, and logged as a JSON string.
        await c.send("{not json")
        assert await c.closed() == 4000
        # Not JSON and naming a user-input field: withheld.
        await w.send('{"value":"%s"' % secret)
        assert await w.closed() == 4000
    run(go())
    # The log is written by a background thread: wait until the last line is there.
    deadline = time.time() + 10
    while True:
        lines = log_lines(server)
        if sum(1 for l in lines if l.get("type") == "invalid") >= 2 or time.time() > deadline:
            break
        time.sleep(0.05)
    text = json.dumps(lines)
    assert secret not in text
    invalid = [l for l in lines if l.get("type") == "invalid"]
    assert [l["message"] for l in invalid][0] == "{not json" and invalid[0]["bytes"] == 9
    assert "redacted" in invalid[1]["message"]
    navigate = [l for l in lines if l.get("type") == "worker.command" and l["message"].get("command") == "navigate"]
    assert navigate and navigate[0]["message"]["params"] == {"url": "https://example.com/"}


def test_each_api_key_is_a_tenant(serve_factory):
    server = serve_factory("--api-key", "other-key")
    mine = sb.create(server.port)
    status, theirs = sb.rest(server.port, "POST", "/v1/sessions", {}, key="other-key")
    assert status == 201
    sid = mine["sessionId"]
    for method, path in (("GET", f"/v1/sessions/{sid}"), ("GET", f"/v1/sessions/{sid}/events"),
                         ("GET", f"/v1/sessions/{sid}/journal"), ("DELETE", f"/v1/sessions/{sid}")):
        status, body = sb.rest(server.port, method, path, key="other-key")
        assert status == 404 and body["error"]["code"] == "not_found", (method, path, body)
    _, listed = sb.rest(server.port, "GET", "/v1/sessions", key="other-key")
    assert [s["sessionId"] for s in listed["sessions"]] == [theirs["sessionId"]]
    _, listed = sb.rest(server.port, "GET", "/v1/sessions")
    assert [s["sessionId"] for s in listed["sessions"]] == [sid]
    # The owner still has it, alive, after the other tenant's DELETE.
    status, info = sb.rest(server.port, "GET", f"/v1/sessions/{sid}")
    assert status == 200 and info["phase"] == "created"
    # Ownership survives a restart.
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server2 = restart_only(server, "--api-key", "other-key")
    try:
        assert sb.rest(server2.port, "GET", f"/v1/sessions/{sid}", key="other-key")[0] == 404
        assert sb.rest(server2.port, "GET", f"/v1/sessions/{sid}")[0] == 200
    finally:
        server2.stop()


def test_data_directory_and_files_are_private(serve_factory, tmp_path):
    import os
    import stat
    d = tmp_path / "loose"
    d.mkdir(mode=0o755)
    (d / "traffic.jsonl").write_text("")
    os.chmod(d / "traffic.jsonl", 0o644)
    server = serve_factory(data_dir=str(d))
    s = sb.create(server.port)

    async def go():
        w = await Peer.connect(s, "worker")
        await w.send({"type": "worker.command", "command": "url"})
    run(go())
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    names = os.listdir(d)
    assert {"switchboard.db", "traffic.jsonl"} <= set(names)
    for name in names:
        mode = stat.S_IMODE(os.stat(d / name).st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))


def metric(port, name):
    _, text = sb.rest(port, "GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_a_failing_store_acknowledges_nothing_and_recovers_by_itself(server):
    import os
    import sqlite3

    async def go():
        s, w, c = await sb.pair(server.port)
        lock = sqlite3.connect(os.path.join(server.data_dir, "switchboard.db"), isolation_level=None, timeout=10)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            await c.send({"type": "client.events", "clientSeq": 1, "events": [{"type": "one", "ts": 1}]})
            wait_until(lambda: sb.rest(server.port, "GET", "/readyz")[0] == 503, what="readyz 503")
            assert sb.rest(server.port, "GET", "/readyz")[1]["error"]["code"] == "store_unavailable"
            assert metric(server.port, "switchboard_store_failed_commits_total") >= 1
            assert metric(server.port, "switchboard_store_healthy") == 0
            # New work is refused with a clear answer; nothing is acknowledged.
            status, body = sb.rest(server.port, "POST", "/v1/sessions", {})
            assert status == 503 and body["error"]["code"] == "store_unavailable"
            await c.send({"type": "client.events", "clientSeq": 2, "events": [{"type": "two", "ts": 2}]})
            await c.expect_error("internal_error")
            await w.send({"type": "worker.command", "id": "k", "command": "url"})
            assert (await w.expect_error("internal_error"))["id"] == "k"
            # A REST call that must wait for the store answers 503 within its deadline.
            started = time.time()
            status, body = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
            assert status == 503 and body["error"]["code"] == "store_unavailable" and time.time() - started < 9
            assert not any(m.get("type") == "server.ack" for m in c.seen)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        # The retried commit lands: batch 1 is acknowledged, the server is ready again.
        await c.expect("server.ack", clientSeq=1, timeout=15)
        wait_until(lambda: sb.rest(server.port, "GET", "/readyz")[0] == 200, what="readyz 200")
        assert metric(server.port, "switchboard_store_healthy") == 1
        await c.send({"type": "client.events", "clientSeq": 2, "events": [{"type": "two", "ts": 2}]})
        await c.expect("server.ack", clientSeq=2)
        await w.send({"type": "worker.command", "id": "k", "command": "url"})
        await c.expect("server.command", id="k")
        _, ev = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
        assert [e["type"] for e in ev["events"]] == ["one", "two"]
        # The retried batch is stored once: entry numbers are unique and batch 1 appears once.
        _, j = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/journal?limit=1000")
        ns = [e["n"] for e in j["entries"]]
        assert ns == sorted(set(ns))
        assert [e["message"].get("clientSeq") for e in j["entries"] if e["message"]["type"] == "client.events"].count(1) == 1
        assert sb.rest(server.port, "POST", "/v1/sessions", {})[0] == 201
    run(go(), timeout=90)


def test_rest_numbers_out_of_range_are_refused(serve_factory):
    server = serve_factory("--store", "memory")
    s = sb.create(server.port)
    for path in ("journal", "events"):
        for after in ("9223372036854775807", "9007199254740992", "-1", "1e3"):
            status, body = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}/{path}?after={after}")
            assert status == 400 and body["error"]["code"] == "validation_error", (path, after, body)
    for cursor in ("9223372036854775807", "-9223372036854775808"):
        assert sb.rest(server.port, "GET", f"/v1/sessions?cursor={cursor}")[0] == 200
    assert healthy(server.port)


def test_a_second_response_to_an_answered_command_is_unknown(server):
    async def go():
        s, w, c = await sb.pair(server.port)
        await w.send({"type": "worker.command", "id": "a", "command": "url"})
        await c.expect("server.command", id="a")
        await c.send({"type": "client.command_response", "id": "a", "result": {"value": 1}})
        await w.expect("server.command_result", id="a")
        await c.send({"type": "client.command_response", "id": "a", "result": {"value": 2}})
        assert (await c.expect_error("unknown_command_id"))["id"] == "a"
        # A late response to a command that timed out is dropped silently.
        await w.send({"type": "worker.command", "id": "t", "command": "url", "timeoutMs": 50})
        await c.expect("server.cancel", id="t")
        await c.send({"type": "client.command_response", "id": "t", "result": {}})
        await w.send({"type": "worker.command", "id": "b", "command": "url"})
        await c.expect("server.command", id="b")
        assert not any(m.get("type") == "server.error" and m.get("id") == "t" for m in c.seen)
    run(go())

"""Playwright through a session (docs/protocol.md section 16): `connect_over_cdp` against
Switchboard, with the reference Chromium client (switchboard-browser) as the session's client."""
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import ThreadingHTTPServer

import pytest
import websockets
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

import contract
import sb
from conftest import BIN, ROOT

sys.path.insert(0, os.path.join(ROOT, "Tests", "Site"))
import testsite  # noqa: E402

BROWSER_BIN = os.path.join(os.path.dirname(BIN), "switchboard-browser")


@pytest.fixture
def site():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), testsite.Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def browser_client():
    """Starts switchboard-browser for a session; stops it (and its Chromium) by PID."""
    procs = []

    def start(session, *extra):
        p = subprocess.Popen([BROWSER_BIN, "--url", session["websocketUrl"], "--token", session["clientToken"], *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        procs.append(p)
        lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "browser ready" in line:
                threading.Thread(target=lambda: [lines.append(l) for l in p.stdout], daemon=True).start()
                p.lines = lines
                return p
        raise RuntimeError("switchboard-browser did not start: " + "".join(lines))

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, 15)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
                p.wait()


def wait_client(port, sid):
    """Until the session's client has said hello (REST, bounded)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        status, info = sb.rest(port, "GET", f"/v1/sessions/{sid}")
        if info.get("clientConnected"):
            return
        time.sleep(0.05)
    raise AssertionError("the client did not connect")


def discovery(port, sid, path, token):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/sessions/{sid}/cdp/{path}",
                                 headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_playwright_drives_the_session_browser_over_cdp(server, site, browser_client):
    s = sb.create(server.port)
    sid, wt = s["sessionId"], s["workerToken"]
    client = browser_client(s)
    wait_client(server.port, sid)

    # Discovery answers like Chromium's /json/version, with and without the trailing slash.
    for path in ("json/version", "json/version/"):
        status, v = discovery(server.port, sid, path, wt)
        assert status == 200, v
        assert v["webSocketDebuggerUrl"] == f"ws://127.0.0.1:{server.port}/sessions/{sid}/cdp"
        assert v["Browser"].startswith(("Chrome/", "HeadlessChrome/")) and v["Protocol-Version"] == "1.3"
    assert discovery(server.port, sid, "json/list", wt) == (200, [])
    # The worker token authorises; the client token, a wrong token or none do not.
    for token in (None, s["clientToken"], "wt_wrong"):
        status, body = discovery(server.port, sid, "json/version", token)
        assert status == 401 and body["error"]["code"] == "unauthorized", body
    assert discovery(server.port, "sess_nope", "json/version", wt)[0] == 404

    endpoint = f"http://127.0.0.1:{server.port}/v1/sessions/{sid}/cdp"

    async def main():
        async with async_playwright() as p:
            with pytest.raises(PlaywrightError, match="401"):
                await p.chromium.connect_over_cdp(endpoint, headers={"Authorization": "Bearer wt_wrong"}, timeout=15000)
            with pytest.raises(PlaywrightError):
                await p.chromium.connect_over_cdp(f"ws://127.0.0.1:{server.port}/sessions/{sid}/cdp", timeout=15000)

            browser = await p.chromium.connect_over_cdp(endpoint, headers={"Authorization": "Bearer " + wt}, timeout=30000)
            context = browser.contexts[0]
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(site + "/login")
            await page.fill("#email", "alice@example.com")
            await page.click("#signin")
            await page.wait_for_url("**/dashboard")
            assert await page.evaluate("document.title") == "Dashboard"
            png = await page.screenshot()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000

            second = await context.new_page()
            await second.goto(site + "/app")
            assert await second.title() == "App"
            await second.close()

            # The relay's own commands work on the same session while Playwright is attached.
            w = await sb.Peer.connect(s, "worker")
            await w.send({"type": "worker.command", "id": "c1", "command": "evaluate", "params": {"expression": "return document.title"}})
            r = await w.expect("server.command_result", timeout=30, id="c1")
            assert r.get("error") is None and r["result"]["value"] == "Dashboard", r

            # Debug viewers watch CDP frames live.
            d = await sb.Peer.connect(s, "debug")
            assert await page.evaluate("6 * 7") == 42
            seen = set()
            while seen != {"cdp_to_client", "cdp_to_worker"}:
                m = await d.recv(timeout=10)
                if m.get("direction", "").startswith("cdp_"):
                    assert m["channel"] == 1 and json.loads(m["data"])
                    seen.add(m["direction"])

            # Calls that would end the user's browser are refused; the browser lives on.
            cdp = await browser.new_browser_cdp_session()
            with pytest.raises(PlaywrightError, match="refused"):
                await cdp.send("Browser.close")
            # The client refuses to close the page its commands run in (the first page).
            own = (await (await context.new_cdp_session(page)).send("Target.getTargetInfo"))["targetInfo"]["targetId"]
            with pytest.raises(PlaywrightError, match="refused"):
                await cdp.send("Target.closeTarget", {"targetId": own})
            assert await page.evaluate("1 + 1") == 2

            # Cancelling the session closes Playwright's connection.
            disconnected = asyncio.Event()
            browser.on("disconnected", lambda _: disconnected.set())
            status, _ = sb.rest(server.port, "DELETE", f"/v1/sessions/{sid}")
            assert status == 200
            await asyncio.wait_for(disconnected.wait(), 15)
            assert not browser.is_connected()
            await w.closed(timeout=10)

    sb.run(main(), timeout=180)

    # Metrics count the channel's frames and the refusal (the channel is gone once the server
    # has Playwright's answer to its close frame).
    deadline = time.time() + 10
    while True:
        _, metrics = sb.rest(server.port, "GET", "/metrics")
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line.startswith("switchboard_cdp")}
        if values["switchboard_cdp_channels"] == 0 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert values['switchboard_cdp_frames_total{direction="worker_to_client"}'] > 20
    assert values['switchboard_cdp_frames_total{direction="client_to_worker"}'] > 20
    assert values["switchboard_cdp_refused_total"] == 1
    assert values["switchboard_cdp_channels"] == 0

    # The traffic shows in `switchboard tail`, redacted: the typed e-mail is not in the log.
    log = os.path.join(server.data_dir, "traffic.jsonl")
    raw = open(log).read()
    assert '"event":"cdp"' in raw and "alice@example.com" not in raw
    tail = subprocess.run([BIN, "tail", "--file", log, "--session", sid], capture_output=True, text=True, timeout=30)
    assert tail.returncode == 0
    assert f"cdp[1] worker -> client Page.navigate" in tail.stdout, tail.stdout[-2000:]
    assert "cdp_refused" in tail.stdout and "Browser.close" in tail.stdout
    assert "cdp[1] client -> worker" in tail.stdout


def test_cdp_is_refused_without_a_client_that_offers_it(server):
    """No client, or a client without the `cdp` capability: discovery and the socket say so."""
    s = sb.create(server.port)
    sid, wt = s["sessionId"], s["workerToken"]
    status, body = discovery(server.port, sid, "json/version", wt)
    assert status == 409 and body["error"]["code"] == "client_not_connected", body

    async def main():
        c = await sb.Peer.connect(s, "client")
        status, body = discovery(server.port, sid, "json/version", wt)
        assert status == 409 and body["error"]["code"] == "cdp_unavailable", body
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            await websockets.connect(f"ws://127.0.0.1:{server.port}/sessions/{sid}/cdp",
                                     additional_headers={"Authorization": "Bearer " + wt})
        assert e.value.response.status_code == 409
        await c.close()
    sb.run(main())


async def cdp_socket(port, sid, token, **kw):
    return await websockets.connect(f"ws://127.0.0.1:{port}/sessions/{sid}/cdp", additional_headers={"Authorization": "Bearer " + token},
                                    max_size=None, open_timeout=10, **kw)


async def close_code(ws, timeout=5):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


def test_cdp_channel_rules_with_a_scripted_client(serve_factory):
    """The relay's rules, with a client that speaks the messages itself: frames both ways in
    order, refusals, bad frames, sizes, the channel limit and every way a channel ends."""
    server = serve_factory(env={"max_cdp_channels": 2, "max_cdp_frame_bytes": 4096})

    async def main():
        s = sb.create(server.port)
        sid, wt = s["sessionId"], s["workerToken"]
        c = await sb.Peer.connect(s, "client", capabilities=["cdp"], cdpVersion={"Browser": "Test/1", "Evil": "x" * 10})
        status, v = discovery(server.port, sid, "json/version", wt)
        assert status == 200 and v["Browser"] == "Test/1" and "Evil" not in v

        # Frames go both ways, in order, and the client's answers reach the worker unchanged.
        ws = await cdp_socket(server.port, sid, wt)
        opened = await c.expect("server.cdp_open")
        ch = opened["channel"]
        for i in range(1, 51):
            await ws.send(json.dumps({"id": i, "method": "Runtime.evaluate", "params": {"expression": f"{i}"}}))
        for i in range(1, 51):
            m = await c.expect("server.cdp")
            assert m["channel"] == ch and json.loads(m["data"])["id"] == i
            await c.send({"type": "client.cdp", "channel": ch, "data": json.dumps({"id": i, "result": {"n": i, "s": "\"q\"\n\u00e9"}})})
        for i in range(1, 51):
            assert json.loads(await ws.recv()) == {"id": i, "result": {"n": i, "s": "\"q\"\n\u00e9"}}

        # Refused: the answer comes from the server, with the frame's sessionId; nothing reaches the client.
        await ws.send(json.dumps({"id": 99, "method": "Browser.close", "sessionId": "S1"}))
        r = json.loads(await ws.recv())
        assert r["id"] == 99 and r["sessionId"] == "S1" and "refused" in r["error"]["message"]
        # Frames for channels that do not exist (closed meanwhile) are dropped; bad ones get errors.
        await c.send({"type": "client.cdp", "channel": 12345, "data": "{}"})
        for bad in ({"type": "client.cdp", "channel": 0, "data": "{}"}, {"type": "client.cdp", "channel": 1e300, "data": "{}"},
                    {"type": "client.cdp", "channel": ch, "data": {"id": 1}}, {"type": "client.cdp", "data": "{}"},
                    {"type": "client.cdp_close", "channel": -1}):
            await c.send(bad)
            await c.expect_error("invalid_message")

        # The channel limit: a third socket is refused with 429 while two are open.
        ws2 = await cdp_socket(server.port, sid, wt)
        ch2 = (await c.expect("server.cdp_open"))["channel"]
        assert ch2 == ch + 1
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            await cdp_socket(server.port, sid, wt)
        assert e.value.response.status_code == 429

        # A frame that is not a CDP command closes that channel with 4000; the client is told.
        await ws2.send("not json")
        assert await close_code(ws2) == 4000
        assert (await c.expect("server.cdp_close"))["channel"] == ch2
        # The client's side closes: the worker's socket closes with 4011.
        ws3 = await cdp_socket(server.port, sid, wt)
        ch3 = (await c.expect("server.cdp_open"))["channel"]
        await c.send({"type": "client.cdp_close", "channel": ch3, "reason": "browser gone"})
        assert await close_code(ws3) == 4011
        # A frame from the browser over max_cdp_frame_bytes closes the channel with 1009.
        await c.send({"type": "client.cdp", "channel": ch, "data": json.dumps({"id": 1, "result": {"x": "y" * 5000}})})
        assert await close_code(ws) == 1009
        assert (await c.expect("server.cdp_close"))["channel"] == ch
        # So does one from the worker (the socket's message limit), and binary frames with 1003.
        ws4 = await cdp_socket(server.port, sid, wt)
        await c.expect("server.cdp_open")
        await ws4.send(json.dumps({"id": 1, "method": "X", "params": {"x": "y" * 5000}}))
        assert await close_code(ws4) == 1009
        await c.expect("server.cdp_close")
        ws5 = await cdp_socket(server.port, sid, wt)
        await c.expect("server.cdp_open")
        await ws5.send(b"\x00\x01")
        assert await close_code(ws5) == 1003
        await c.expect("server.cdp_close")

        # The client disconnects: open channels close with 4010.
        ws6 = await cdp_socket(server.port, sid, wt)
        await c.expect("server.cdp_open")
        await c.close()
        assert await close_code(ws6) == 4010

        # A new client; the session ends: channels close with 1000, new ones are refused (409).
        c2 = await sb.Peer.connect(s, "client", capabilities=["cdp"])
        ws7 = await cdp_socket(server.port, sid, wt)
        await c2.expect("server.cdp_open")
        status, _ = sb.rest(server.port, "DELETE", f"/v1/sessions/{sid}")
        assert status == 200
        assert await close_code(ws7) == 1000
        status, body = discovery(server.port, sid, "json/version", wt)
        assert status == 409 and body["error"]["code"] == "session_terminal"

    sb.run(main())
    deadline = time.time() + 10
    while "switchboard_cdp_channels 0" not in (metrics := sb.rest(server.port, "GET", "/metrics")[1]) and time.time() < deadline:
        time.sleep(0.05)
    assert 'switchboard_limit_hits_total{limit="max_cdp_channels"} 1' in metrics
    assert 'switchboard_limit_hits_total{limit="max_cdp_frame_bytes"} 2' in metrics
    assert "switchboard_cdp_refused_total 1" in metrics and "switchboard_cdp_channels 0" in metrics


def test_reference_client_results_match_the_documented_shapes(server, site, browser_client):
    """Every catalog command through switchboard-browser in real Chromium: each result matches
    its `result.NAME` schema in docs/schemas/switchboard.json (the shapes client teams build to)."""
    s = sb.create(server.port)
    browser_client(s, "--no-cdp")
    steps = [
        ("navigate", {"url": site + "/dashboard", "waitUntil": "load"}), ("url", {}), ("title", {}), ("content", {}),
        ("reload", {}), ("click", {"selector": "#inc"}), ("fill", {"selector": "#notes", "value": "hello"}),
        ("type", {"selector": "#notes", "text": "!"}), ("select", {"selector": "#color", "values": ["green"]}),
        ("hover", {"selector": "#hoverme"}), ("press", {"key": "Tab"}), ("scroll", {"direction": "down", "amount": 200}),
        ("waitForSelector", {"selector": "#bottom", "state": "attached"}), ("getAttribute", {"selector": "#applink", "name": "href"}),
        ("textContent", {"selector": "h1"}), ("innerHTML", {"selector": "h1"}), ("isVisible", {"selector": "h1"}),
        ("evaluate", {"expression": "return document.title"}), ("screenshot", {"format": "png"}), ("extract", {}),
        ("waitForNetworkIdle", {"idleMs": 100}), ("waitForTimeout", {"ms": 10}), ("updateStatus", {"heading": "Working"}),
        ("navigate", {"url": site + "/app"}), ("goBack", {}), ("goForward", {}),
    ]

    async def main():
        w = await sb.Peer.connect(s, "worker")
        for k, (command, params) in enumerate(steps):
            await w.send({"type": "worker.command", "id": f"r{k}", "command": command, "params": params})
            r = await w.expect("server.command_result", timeout=30, id=f"r{k}")
            assert r.get("error") is None, (command, r)
            contract.check(f"result.{command}", r["result"])
        return {c for c, _ in steps}
    covered = sb.run(main(), timeout=240)
    # Every command but waitForNavigation (it needs a navigation while it waits) was checked.
    documented = {n[len("result."):] for n in contract.SCHEMA["$defs"] if n.startswith("result.")}
    assert documented - covered == {"waitForNavigation"}

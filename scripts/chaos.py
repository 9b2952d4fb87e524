#!/usr/bin/env python3
"""Hostile load against one `switchboard serve` on loopback, while ordinary sessions keep
relaying. Each attack runs for --seconds; ordinary worker/client pairs send commands in a
closed loop all along. For every attack it prints the ordinary sessions' p99 round trip,
commands completed and lost (must be 0), and the server's peak RSS; it exits 1 if a command
was lost, the server died, or memory passed --max-rss-mib.

    scripts/chaos.py [--sessions 50] [--seconds 8] [--attacks a,b,…] [--fd-limit 4096]

Attacks: slowloris (request heads a byte at a time), handshakes (connections that never send
a request, upgrades that never speak), flood (connections up to the server's descriptor
limit), slow-consumers (debug viewers and a subscribed worker that stop reading while
telemetry floods), messages (a peer sending as fast as it can), bytes (1 MiB messages as fast
as it can), deflate-bombs (messages of kilobytes that inflate past the limit).

Everything is on 127.0.0.1, every loop is bounded in time, and the server is stopped by PID.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "chaos-key"


def binary():
    for b in (os.environ.get("SWITCHBOARD_BIN"), os.path.join(ROOT, ".build", "release", "switchboard"),
              os.path.join(ROOT, ".build", "debug", "switchboard")):
        if b and os.path.exists(b):
            return b
    sys.exit("build switchboard first (swift build -c release)")


def rest(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    def __init__(self, fd_limit):
        self.dir = tempfile.mkdtemp(prefix="switchboard-chaos-")

        def limits():
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        env = dict(os.environ, SWITCHBOARD_MAX_CONNECTIONS_PER_IP="100000", SWITCHBOARD_RATE_PER_SECOND="1000")
        self.proc = subprocess.Popen([binary(), "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", self.dir,
                                      "--api-key", KEY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env, preexec_fn=limits)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit("switchboard did not start: " + line)
        self.port = int(m.group(1))
        self.peak = 0.0

    def sample(self):
        if self.proc.poll() is None:
            self.peak = max(self.peak, rss_mib(self.proc.pid))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ws_url(server, s, role):
    token = s["clientToken"] if role == "client" else s["workerToken"]
    return f"ws://127.0.0.1:{server.port}/sessions/{s['sessionId']}/ws?role={role}&token={token}"


class Ordinary:
    """Worker/client pairs running commands in a closed loop; counts what completes and what
    is lost (no result within 10 s, or an error)."""

    def __init__(self, server, n):
        self.server, self.n = server, n
        self.latencies, self.lost, self.done = [], 0, 0
        self.why = []
        self.stop = asyncio.Event()

    async def pair(self, k, s):
        w = await websockets.connect(ws_url(self.server, s, "worker"), max_size=None)
        c = await websockets.connect(ws_url(self.server, s, "client"), max_size=None)
        await w.send(json.dumps({"type": "worker.hello", "protocolVersion": 1}))
        await c.send(json.dumps({"type": "client.hello", "protocolVersion": 1}))

        async def client():
            async for raw in c:
                m = json.loads(raw)
                # Commands arrive live, or in the replay that answers the hello.
                for x in m.get("messages", []) if m.get("type") == "server.replay" else [m]:
                    if x.get("type") == "server.command":
                        await c.send(json.dumps({"type": "client.command_response", "id": x["id"], "result": {"value": k}}))
        ct = asyncio.ensure_future(client())
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                cid = f"c{n}"
                t0 = time.monotonic()
                await w.send(json.dumps({"type": "worker.command", "id": cid, "command": "url"}))
                try:
                    while True:
                        m = json.loads(await asyncio.wait_for(w.recv(), 10))
                        if m.get("type") == "server.command_result" and m.get("id") == cid:
                            break
                    if "error" in m:
                        self.lost += 1
                    else:
                        self.done += 1
                        self.latencies.append((time.monotonic() - t0) * 1000)
                except (asyncio.TimeoutError, websockets.exceptions.ConnectionClosed) as e:
                    self.lost += 1
                    self.why.append(repr(e)[:160])
                    break
                await asyncio.sleep(0.02)
        finally:
            ct.cancel()
            await w.close()
            await c.close()

    def run(self):
        # Sessions are created first: a blocking REST call inside the loop would stall the pairs.
        t0 = time.monotonic()
        sessions = [rest(self.server.port, "POST", "/v1/sessions", {"config": {"commandTimeoutMs": 20000}}) for _ in range(self.n)]
        print(f"created {self.n} sessions in {time.monotonic() - t0:.2f} s", flush=True)
        return [asyncio.ensure_future(self.pair(k, s)) for k, s in enumerate(sessions)]

    def reset(self):
        self.latencies, self.lost, self.done = [], 0, 0

    def p99(self):
        if not self.latencies:
            return float("nan")
        l = sorted(self.latencies)
        return l[min(len(l) - 1, int(len(l) * 0.99))]


async def until(deadline):
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def slowloris(server, deadline):
    socks = []
    loop = asyncio.get_running_loop()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10000
    for _ in range(1000):
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            socks.append(s)
        except OSError:
            s.close()
            break
    i = 0
    while time.monotonic() < deadline and i < len(head):
        for s in socks:
            try:
                s.send(head[i:i + 1])
            except OSError:
                pass
        i += 1
        await asyncio.sleep(0.1)
    for s in socks:
        s.close()


async def handshakes(server, deadline):
    socks = []
    loop = asyncio.get_running_loop()
    upgrade = (b"GET /sessions/x/ws?role=worker&token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    while time.monotonic() < deadline and len(socks) < 1500:
        s = socket.socket()
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", server.port))
            if len(socks) % 2:
                s.send(upgrade)  # never finished
            socks.append(s)
        except OSError:
            s.close()
            await asyncio.sleep(0.05)
    await until(deadline)
    for s in socks:
        s.close()


async def flood(server, deadline):
    socks = []
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", server.port)), 1)
            socks.append(s)
        except (OSError, asyncio.TimeoutError):
            s.close()
            await asyncio.sleep(0.05)
        if len(socks) % 200 == 0:
            await asyncio.sleep(0)
        if len(socks) > 20000:
            break
    await until(deadline)
    for s in socks:
        s.close()
    return len(socks)


async def slow_consumers(server, deadline):
    s = rest(server.port, "POST", "/v1/sessions", {})
    w = await websockets.connect(ws_url(server, s, "worker"), max_size=None, max_queue=1)
    await w.send(json.dumps({"type": "worker.hello", "protocolVersion": 1, "events": ["flood"]}))
    c = await websockets.connect(ws_url(server, s, "client"), max_size=None)
    await c.send(json.dumps({"type": "client.hello", "protocolVersion": 1}))
    viewers = [await websockets.connect(ws_url(server, s, "debug"), max_size=None, max_queue=1) for _ in range(8)]
    # Nobody reads w or the viewers from here on; the client floods events they receive.
    n = 0
    pad = "p" * 4000
    try:
        while time.monotonic() < deadline:
            n += 1
            await c.send(json.dumps({"type": "client.events", "clientSeq": n, "events": [{"type": "flood", "payload": {"pad": pad}}] * 20}))
            if n % 10 == 0:
                await asyncio.sleep(0.01)
    except websockets.exceptions.ConnectionClosed:
        pass
    await until(deadline)
    for x in [w, c] + viewers:
        x.transport.abort()


async def messages(server, deadline):
    s = rest(server.port, "POST", "/v1/sessions", {})
    w = await websockets.connect(ws_url(server, s, "worker"), max_size=None)
    await w.send(json.dumps({"type": "worker.hello", "protocolVersion": 1}))
    drain = asyncio.ensure_future(w.wait_closed())
    try:
        while time.monotonic() < deadline and not drain.done():
            for _ in range(100):
                await w.send('{"type":"worker.cancel","id":"x"}')
            await asyncio.sleep(0)
    except websockets.exceptions.ConnectionClosed:
        pass
    w.transport.abort()


async def bytes_flood(server, deadline):
    s = rest(server.port, "POST", "/v1/sessions", {})
    c = await websockets.connect(ws_url(server, s, "client"), max_size=None, compression=None)
    await c.send(json.dumps({"type": "client.hello", "protocolVersion": 1}))
    big = json.dumps({"type": "client.events", "events": [{"type": "x", "payload": {"pad": "b" * (1 << 20)}}]})
    try:
        while time.monotonic() < deadline:
            await c.send(big)
    except websockets.exceptions.ConnectionClosed:
        pass
    c.transport.abort()


async def deflate_bombs(server, deadline):
    s = rest(server.port, "POST", "/v1/sessions", {})
    bomb = json.dumps({"type": "client.hello", "protocolVersion": 1, "pad": "\0" * (64 << 20)})
    while time.monotonic() < deadline:
        try:
            c = await websockets.connect(ws_url(server, s, "client"), max_size=None, compression="deflate")
            await c.send(bomb)
            await asyncio.wait_for(c.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
            pass


class PortOnly:
    def __init__(self, port):
        self.port = port


def attack_process(name, port, seconds):
    async def run():
        deadline = time.monotonic() + seconds
        try:
            await asyncio.wait_for(ATTACKS[name](PortOnly(port), deadline), seconds + 25)
        except (asyncio.TimeoutError, OSError, websockets.exceptions.WebSocketException):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536),) * 2)
    asyncio.run(run())


ATTACKS = {"baseline": None, "slowloris": slowloris, "handshakes": handshakes, "flood": flood,
           "slow-consumers": slow_consumers, "messages": messages, "bytes": bytes_flood, "deflate-bombs": deflate_bombs}


async def main(args):
    server = Server(args.fd_limit)
    ordinary = Ordinary(server, args.sessions)
    tasks = ordinary.run()
    rows, failed = [], False
    try:
        await asyncio.sleep(1)
        for name in ["baseline"] + [a for a in args.attacks.split(",") if a and a != "baseline"]:
            ordinary.reset()
            server.peak = 0
            deadline = time.monotonic() + args.seconds

            async def sampler():
                while time.monotonic() < deadline + 1:
                    server.sample()
                    await asyncio.sleep(0.1)
            st = asyncio.ensure_future(sampler())
            if ATTACKS[name]:
                # The attacker runs in its own process, so that its work does not slow the
                # ordinary sessions' client side (only the server is measured).
                proc = multiprocessing.get_context("spawn").Process(target=attack_process, args=(name, server.port, args.seconds))
                proc.start()
                while proc.is_alive() and time.monotonic() < deadline + 30:
                    await asyncio.sleep(0.1)
                if proc.is_alive():
                    proc.kill()
                proc.join()
            else:
                await until(deadline)
            await asyncio.sleep(1)  # let the ordinary sessions' last commands finish
            await st
            alive = server.proc.poll() is None
            healthy = False
            if alive:
                try:
                    healthy = rest(server.port, "GET", "/healthz")["status"] == "ok"
                except OSError:
                    healthy = False
            rows.append((name, ordinary.p99(), ordinary.done, ordinary.lost, server.peak, healthy))
            print(f"{name:15s} p99 {ordinary.p99():8.2f} ms  commands {ordinary.done:6d}  lost {ordinary.lost}  "
                  f"peak RSS {server.peak:7.1f} MiB  {'serving' if healthy else 'NOT SERVING'}", flush=True)
            if ordinary.lost or not healthy or server.peak > args.max_rss_mib:
                failed = True
            if not alive:
                break
    finally:
        ordinary.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.stop()
    print()
    print("| attack | ordinary p99 (ms) | commands | lost | server peak RSS (MiB) | serving after |")
    print("|---|---|---|---|---|---|")
    for name, p99, done, lost, peak, healthy in rows:
        print(f"| {name} | {p99:.2f} | {done} | {lost} | {peak:.1f} | {'yes' if healthy else 'NO'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--attacks", default="slowloris,handshakes,flood,slow-consumers,messages,bytes,deflate-bombs")
    ap.add_argument("--fd-limit", type=int, default=4096, help="the server's descriptor limit (the flood reaches it)")
    ap.add_argument("--max-rss-mib", type=float, default=1024)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    sys.exit(asyncio.run(main(args)))

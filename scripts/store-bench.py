#!/usr/bin/env python3
"""Store benchmark: durable acknowledged telemetry events per second, and the latency the
store adds on the command path (closed-loop commands on one session, SQLite vs memory).
Uses the release build; every server it starts is on loopback and stopped by PID.

    scripts/store-bench.py [--seconds 10]
"""
import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, ".build", "release", "switchboard"))


def start(store):
    p = subprocess.Popen([BIN, "serve", "--port", "0", "--data-dir", tempfile.mkdtemp(prefix="sb-store-bench-"), "--api-key", "k",
                          "--store", store, "--rate-per-second", "10000000", "--rate-burst", "10000000"], stdout=subprocess.PIPE, text=True)
    port = int(re.search(r":(\d+) ", p.stdout.readline()).group(1))
    return p, port


def create(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/sessions", data=b"{}", method="POST", headers={"Authorization": "Bearer k"})
    return json.loads(urllib.request.urlopen(req).read())


async def peer(s, role):
    ws = await websockets.connect(f"{s['websocketUrl']}?role={role}&token={s[role + 'Token']}", max_size=None)
    await ws.send(json.dumps({"type": f"{role}.hello"}))
    await ws.recv()
    return ws


async def events_per_second(port, seconds, sessions=20, batch=100, window=4):
    acked = 0
    stop = time.time() + seconds

    async def one():
        nonlocal acked
        s = create(port)
        c = await peer(s, "client")
        seq, inflight = 0, 0
        while time.time() < stop:
            while inflight < window:
                seq += 1
                inflight += 1
                await c.send(json.dumps({"type": "client.events", "clientSeq": seq,
                                         "events": [{"type": "console", "payload": {"i": i, "text": "x" * 64}} for i in range(batch)]}))
            m = json.loads(await c.recv())
            if m.get("type") == "server.ack":
                inflight -= 1
                acked += batch
        await c.close()

    start_t = time.time()
    await asyncio.gather(*(one() for _ in range(sessions)))
    return acked / (time.time() - start_t)


async def command_rtts(port, n=3000):
    s = create(port)
    w, c = await peer(s, "worker"), await peer(s, "client")
    rtts = []
    for i in range(n):
        t = time.perf_counter()
        await w.send(json.dumps({"type": "worker.command", "id": f"c{i}", "command": "url"}))
        cmd = json.loads(await c.recv())
        await c.send(json.dumps({"type": "client.command_response", "id": cmd["id"], "result": {"value": "u"}}))
        json.loads(await w.recv())
        rtts.append((time.perf_counter() - t) * 1e6)
    rtts.sort()
    return rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    m = re.search(re.escape(name) + r" ([0-9.e+-]+)", text)
    return float(m.group(1)) if m else None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    results = {}
    for store in ("memory", "sqlite"):
        p, port = start(store)
        try:
            eps = await events_per_second(port, args.seconds)
            p50, p99 = await command_rtts(port)
            commit99 = metric(port, 'switchboard_store_commit_ms{quantile="0.99"}')
            results[store] = (eps, p50, p99, commit99)
        finally:
            p.terminate()
            p.wait()
    m, q = results["memory"], results["sqlite"]
    print(f"acked telemetry events/s (20 sessions, batches of 100, 4 in flight): memory {m[0]:,.0f}, sqlite {q[0]:,.0f}")
    print(f"command round trip, 1 session (µs, Python peers): memory p50 {m[1]:.0f} p99 {m[2]:.0f}; sqlite p50 {q[1]:.0f} p99 {q[2]:.0f}")
    print(f"store added latency on the command path: p50 {q[1] - m[1]:+.0f} µs, p99 {q[2] - m[2]:+.0f} µs; store commit p99 {q[3]:.2f} ms")


asyncio.run(main())

#!/usr/bin/env python3
"""Crash test: sessions run commands, yields and telemetry while the server is killed with
SIGKILL at random moments and restarted on the same data directory, ROUNDS times. Peers
behave like the SDKs: they reconnect with lastSeq, the client remembers its last 16 responses
(and re-sends one instead of executing a command twice) and resends unacked telemetry after
lastClientSeq. After the last restart the invariants are checked and printed:

  - every acked telemetry event is stored exactly once;
  - no command was executed twice by a client;
  - every command a client received got its result to the worker (live or replayed);
  - phases, creation times and deadlines are unchanged.

    scripts/crash-test.py [--rounds 20] [--sessions 12] [--seed N]      (exit 1 on a violation)
"""
import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, OrderedDict

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, ".build", "debug", "switchboard"))
KEY = "crash-key"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, data, port):
        self.data, self.port, self.proc = data, port, None

    def start(self):
        self.proc = subprocess.Popen([BIN, "serve", "--port", str(self.port), "--data-dir", self.data, "--api-key", KEY,
                                      "--rate-per-second", "100000", "--rate-burst", "100000"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(100):
            line = self.proc.stdout.readline()
            if "listening" in line:
                return
        raise RuntimeError("server did not start")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def rest(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Stats:
    def __init__(self):
        self.executions = Counter()      # (session, id) -> times the client executed it
        self.received = set()            # (session, id) the client was sent
        self.delivered = set()           # (session, id) the worker got a result for
        self.acked = set()               # (session, clientSeq) acked by the server
        self.sizes = {}                  # (session, clientSeq) -> events in that batch
        self.reissued = 0
        self.reissue_log = []


async def worker(sid, s, stats, stop, port, draining, idle):
    n, outstanding, last_seq = 0, None, 0
    while not stop.is_set():
        try:
            async with websockets.connect(f"{s['websocketUrl']}?role=worker&token={s['workerToken']}", open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "worker.hello", "lastSeq": last_seq}))
                hello = json.loads(await ws.recv())
                since_hello = time.time()
                pending = (hello.get("pending") or {}).get("id")
                while not stop.is_set():
                    if outstanding is None and draining.is_set():
                        idle.add(sid)
                    if outstanding is None and not draining.is_set():
                        n += 1
                        outstanding = f"w{n}"
                        if n % 5 == 0:
                            await ws.send(json.dumps({"type": "worker.yield_to_user", "id": outstanding, "timeoutMs": 60000,
                                                      "conditions": [{"type": "url", "pattern": f"/done-{outstanding}$"}]}))
                        else:
                            await ws.send(json.dumps({"type": "worker.command", "id": outstanding, "command": "title", "timeoutMs": 60000}))
                        pending = outstanding
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except asyncio.TimeoutError:
                        # Not pending after the hello and no result in the replay: the server never
                        # made the command durable, so nothing was promised. Issue a new one.
                        if pending != outstanding and time.time() - since_hello > 1.0:
                            stats.reissue_log.append((sid, outstanding, pending))
                            outstanding = None
                            stats.reissued += 1
                        continue
                    msgs = m["messages"] if m.get("type") == "server.replay" else [m]
                    for x in msgs:
                        last_seq = max(last_seq, x.get("seq") or 0)
                        if x.get("type") == "server.command_result" and "error" not in x:
                            stats.delivered.add((sid, x["id"]))
                            if x["id"] == outstanding:
                                outstanding = None
                        if x.get("type") == "server.error" and x.get("code") == "command_pending":
                            pending = x["details"]["pendingId"]
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            await asyncio.sleep(0.1)


async def client(sid, s, stats, stop):
    cache = OrderedDict()
    last_seq, client_seq, unacked = 0, 0, OrderedDict()
    while not stop.is_set():
        try:
            async with websockets.connect(f"{s['websocketUrl']}?role=client&token={s['clientToken']}", open_timeout=5) as ws:
                await ws.send(json.dumps({"type": "client.hello", "lastSeq": last_seq}))
                hello = json.loads(await ws.recv())
                stored = hello.get("lastClientSeq") or 0
                for cs in [c for c in unacked if c <= stored]:
                    stats.acked.add((sid, cs))
                    del unacked[cs]
                for cs, batch in unacked.items():
                    await ws.send(json.dumps(batch))
                next_telemetry = time.time()
                while not stop.is_set():
                    if time.time() >= next_telemetry:
                        client_seq += 1
                        batch = {"type": "client.events", "clientSeq": client_seq,
                                 "events": [{"type": "console", "payload": {"mark": f"{sid}:{client_seq}:{i}"}} for i in range(2)]}
                        stats.sizes[(sid, client_seq)] = 2
                        unacked[client_seq] = batch
                        await ws.send(json.dumps(batch))
                        next_telemetry = time.time() + 0.05
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.05))
                    except asyncio.TimeoutError:
                        continue
                    msgs = m["messages"] if m.get("type") == "server.replay" else [m]
                    for x in msgs:
                        seq = x.get("seq") or 0
                        if seq and seq <= last_seq:
                            continue
                        last_seq = max(last_seq, seq)
                        t = x.get("type")
                        if t == "server.ack":
                            if x["clientSeq"] in unacked:
                                del unacked[x["clientSeq"]]
                            stats.acked.add((sid, x["clientSeq"]))
                        elif t == "server.command":
                            cid = x["id"]
                            stats.received.add((sid, cid))
                            if cid not in cache:
                                stats.executions[(sid, cid)] += 1
                                cache[cid] = {"type": "client.command_response", "id": cid, "result": {"value": cid}}
                                while len(cache) > 16:
                                    cache.popitem(last=False)
                            await ws.send(json.dumps(cache[cid]))
                        elif t == "server.set_interactive" and x.get("interactive"):
                            yid = x["yieldId"]
                            stats.received.add((sid, yid))
                            client_seq += 1
                            batch = {"type": "client.events", "clientSeq": client_seq,
                                     "events": [{"type": "navigation", "payload": {"url": f"https://x/done-{yid}", "mark": f"{sid}:{client_seq}:0"}}]}
                            stats.sizes[(sid, client_seq)] = 1
                            unacked[client_seq] = batch
                            await ws.send(json.dumps(batch))
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            await asyncio.sleep(0.1)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=12)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    data = tempfile.mkdtemp(prefix="sb-crash-")
    server = Server(data, free_port())
    server.start()
    sessions = [rest(server.port, "POST", "/v1/sessions", {"config": {"disconnectGracePeriodMs": 600000}}) for _ in range(args.sessions)]
    stats, stop, draining, idle = Stats(), asyncio.Event(), asyncio.Event(), set()
    tasks = [asyncio.create_task(worker(s["sessionId"], s, stats, stop, server.port, draining, idle)) for s in sessions]
    tasks += [asyncio.create_task(client(s["sessionId"], s, stats, stop)) for s in sessions]
    await asyncio.sleep(1.0)
    before = {s["sessionId"]: rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}") for s in sessions}
    for r in range(args.rounds):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        server.kill()
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        server.start()
    # Drain: no new commands; wait (bounded) until every worker has its last result.
    draining.set()
    deadline = time.time() + 30
    while len(idle) < len(sessions) and time.time() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    violations, changed = [], 0
    for s in sessions:
        sid = s["sessionId"]
        info = rest(server.port, "GET", f"/v1/sessions/{sid}")
        b = before[sid]
        for k in ("phase", "createdAt", "expiresAt"):
            if info[k] != b[k]:
                changed += 1
                violations.append(f"{sid}: {k} changed {b[k]} -> {info[k]}")
        marks, after = Counter(), 0
        while True:
            page = rest(server.port, "GET", f"/v1/sessions/{sid}/events?after={after}&limit=1000")
            marks.update(e["payload"].get("mark") for e in page["events"])
            if page["next"] is None:
                break
            after = page["next"]
        for (s2, cs) in stats.acked:
            if s2 != sid:
                continue
            for i in range(stats.sizes[(sid, cs)]):
                m = f"{sid}:{cs}:{i}"
                if marks[m] != 1:
                    violations.append(f"acked event {m} stored {marks[m]} times")
    twice = [k for k, v in stats.executions.items() if v > 1]
    violations += [f"command {k} executed {stats.executions[k]} times" for k in twice]
    undelivered = sorted(stats.received - stats.delivered)
    violations += [f"command {k} reached the client but its result never reached the worker" for k in undelivered]
    server.stop()

    print(f"crash test: {args.rounds} SIGKILL restarts, {args.sessions} sessions, seed {args.seed}")
    print(f"  commands and yields the clients received:    {len(stats.received)}")
    print(f"  results delivered to the workers:            {len(stats.delivered & stats.received)} of {len(stats.received)}")
    print(f"  executions by the clients:                   {sum(stats.executions.values())} ({len(twice)} executed twice)")
    print(f"  telemetry batches acked (each checked once):  {len(stats.acked)}")
    print(f"  commands reissued (never durable, never sent): {stats.reissued}")
    print(f"  sessions with phase/createdAt/expiresAt changed: {changed}")
    for v in violations[:20]:
        print("  VIOLATION:", v)
    print(f"crash test: {len(violations)} violations")
    return 1 if violations else 0


sys.exit(asyncio.run(main()))

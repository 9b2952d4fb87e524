#!/usr/bin/env python3
"""Crash test: sessions run commands, yields and telemetry while the server is killed with
SIGKILL at random moments and restarted on the same data directory, ROUNDS times. Peers
behave like the SDKs: they reconnect with lastSeq, the client remembers its last 16 responses
(and re-sends one instead of executing a command twice) and resends unacked telemetry after
lastClientSeq. After the last restart the invariants are checked and printed:

  - every acked telemetry event is stored exactly once;
  - no command was executed twice by a client;
  - every command a client received got its result to the worker (live or replayed);
  - phases, creation times and deadlines are unchanged;
  - no seq is used for two different messages on a stream (a restart or takeover never
    reuses one), and replays that are not complete say so (`complete:false`, counted).

With --cluster the same sessions run through HAProxy in front of three nodes on PostgreSQL
(scripts/cluster.sh), and each round does one of: SIGKILL a node (restarted after a moment),
SIGSTOP a node until its lease has lapsed and another node took its sessions (then SIGCONT:
it must not write into them), or SIGTERM a node (it hands its sessions over; restarted). With
--netns (root) each node runs in a network namespace of its own and a round may also cut a
node off the balancer and the database until its lease has lapsed, then restore its link.

    scripts/crash-test.py [--rounds 20] [--sessions 12] [--seed N] [--cluster [--netns]]   (exit 1 on a violation)
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
import urllib.error
import urllib.request
from collections import Counter, OrderedDict

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, ".build", "debug", "switchboard"))
KEY = "crash-key"
LEASE_MS = 1500


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


class Cluster:
    """scripts/cluster.sh: PostgreSQL, three nodes and HAProxy; faults by node PID."""

    def __init__(self, netns=False):
        global KEY
        self.dir = tempfile.mkdtemp(prefix="sb-crash-cluster-")
        os.rmdir(self.dir)
        self.netns = netns
        self.info = self.script("up", *(["--netns"] if netns else []))
        KEY = self.info["apiKey"]
        self.port = int(self.info["url"].rsplit(":", 1)[1])
        self.faults = Counter()

    def script(self, *args):
        env = dict(os.environ, SWITCHBOARD_BIN=BIN, LEASE_MS=str(LEASE_MS), SWITCHBOARD_RATE_PER_SECOND="100000",
                   SWITCHBOARD_RATE_BURST="100000")
        out = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), *args, "--dir", self.dir], env=env,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None

    async def fault(self, rng):
        k = rng.randrange(len(self.info["nodes"]))
        pid = self.info["nodes"][k]["pid"]
        kind = rng.choice(["kill", "pause", "drain"] + (["cut"] if self.netns else []))
        self.faults[kind] += 1
        if kind == "cut":
            await asyncio.to_thread(self.script, "cut", str(k + 1))
            await asyncio.sleep(LEASE_MS / 1000 * rng.uniform(1.2, 2.5))
            await asyncio.to_thread(self.script, "heal", str(k + 1))
            return
        if kind == "pause":
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(LEASE_MS / 1000 * rng.uniform(1.2, 2.5))
            os.kill(pid, signal.SIGCONT)
            return
        os.kill(pid, signal.SIGKILL if kind == "kill" else signal.SIGTERM)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        self.info = await asyncio.to_thread(self.script, "node", str(k + 1))

    def stop(self, keep=False):
        """Stops everything; with `keep` the logs and traffic logs stay in the directory."""
        self.script("down", *(["--keep-logs"] if keep else []))
        if keep:
            print(f"  logs kept in {self.dir}")


def rest(port, method, path, body=None):
    """A REST call; 503 (a session moving between nodes, a node draining) is retried for 20 s."""
    deadline = time.time() + 20
    while True:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + KEY})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.time() > deadline:
                raise
            time.sleep(0.1)


class Stats:
    def __init__(self):
        self.executions = Counter()      # (session, id) -> times the client executed it
        self.received = set()            # (session, id) the client was sent
        self.delivered = set()           # (session, id) the worker got a result for
        self.acked = set()               # (session, clientSeq) acked by the server
        self.sizes = {}                  # (session, clientSeq) -> events in that batch
        self.reissued = 0
        self.reissue_log = []
        self.seqs = {}                   # (session, role, seq) -> (type, id) of the message
        self.reused = []
        self.incomplete = 0

    def saw(self, sid, role, x):
        """Records a sequenced message; a seq seen before with another message is a reuse."""
        if not x.get("seq"):
            return
        key, what = (sid, role, x["seq"]), (x.get("type"), x.get("id"))
        if self.seqs.setdefault(key, what) != what:
            self.reused.append(f"{sid} {role} seq {x['seq']}: {self.seqs[key]} then {what}")


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
                    if m.get("type") == "server.replay" and not m.get("complete", True):
                        stats.incomplete += 1
                    for x in msgs:
                        stats.saw(sid, "worker", x)
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
                    if m.get("type") == "server.replay" and not m.get("complete", True):
                        stats.incomplete += 1
                    for x in msgs:
                        stats.saw(sid, "client", x)
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
    ap.add_argument("--cluster", action="store_true", help="three nodes on PostgreSQL behind HAProxy")
    ap.add_argument("--netns", action="store_true", help="with --cluster: nodes in network namespaces, also cut off")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.cluster:
        server = Cluster(netns=args.netns)
    else:
        server = Server(tempfile.mkdtemp(prefix="sb-crash-"), free_port())
        server.start()
    sessions = [rest(server.port, "POST", "/v1/sessions", {"config": {"disconnectGracePeriodMs": 600000}}) for _ in range(args.sessions)]
    stats, stop, draining, idle = Stats(), asyncio.Event(), asyncio.Event(), set()
    tasks = [asyncio.create_task(worker(s["sessionId"], s, stats, stop, server.port, draining, idle)) for s in sessions]
    tasks += [asyncio.create_task(client(s["sessionId"], s, stats, stop)) for s in sessions]
    await asyncio.sleep(1.0)
    before = {s["sessionId"]: rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}") for s in sessions}
    for r in range(args.rounds):
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        if args.cluster:
            await server.fault(rng)
            continue
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
        try:
            info = rest(server.port, "GET", f"/v1/sessions/{sid}")
        except Exception as e:
            violations.append(f"{sid}: lost ({e!r})")
            continue
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
    violations += [f"seq reused: {r}" for r in stats.reused]
    if args.cluster:
        server.stop(keep=bool(violations))
    else:
        server.stop()

    if args.cluster:
        print(f"cluster crash test{' (network namespaces)' if args.netns else ''}: {args.rounds} faults on 3 nodes ({dict(server.faults)}), {args.sessions} sessions, seed {args.seed}")
    else:
        print(f"crash test: {args.rounds} SIGKILL restarts, {args.sessions} sessions, seed {args.seed}")
    print(f"  commands and yields the clients received:    {len(stats.received)}")
    print(f"  results delivered to the workers:            {len(stats.delivered & stats.received)} of {len(stats.received)}")
    print(f"  executions by the clients:                   {sum(stats.executions.values())} ({len(twice)} executed twice)")
    print(f"  telemetry batches acked (each checked once):  {len(stats.acked)}")
    print(f"  commands reissued (never durable, never sent): {stats.reissued}")
    print(f"  sessions with phase/createdAt/expiresAt changed: {changed}")
    print(f"  sequenced messages checked for reuse:        {len(stats.seqs)} ({len(stats.reused)} reused)")
    print(f"  replays marked incomplete:                   {stats.incomplete}")
    for v in violations[:20]:
        print("  VIOLATION:", v)
    print(f"crash test: {len(violations)} violations")
    return 1 if violations else 0


sys.exit(asyncio.run(main()))

"""Several nodes on PostgreSQL behind HAProxy (docs/scaling.md): routing by session id,
takeover after a node dies, fencing of a node that was paused, hand-off on request and on
drain, lists from any node, timers of sessions nobody serves. `scripts/cluster.sh` starts a
throwaway PostgreSQL, three nodes and HAProxy on loopback and stops them by PID."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import websockets

import sb
from conftest import BIN, ROOT
from sb import Peer, run

LEASE_MS = 1500
pytestmark = pytest.mark.skipif(not shutil.which("haproxy") or not os.path.isdir("/usr/lib/postgresql"),
                                reason="PostgreSQL and HAProxy are installed by scripts/install-deps.sh")


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sb-cluster-")
        os.rmdir(self.dir)
        self.info = self.script("up")
        self.port = int(self.info["url"].rsplit(":", 1)[1])

    def script(self, *args):
        env = dict(os.environ, SWITCHBOARD_BIN=BIN, LEASE_MS=str(LEASE_MS))
        out = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), *args, "--dir", self.dir], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else None

    def rest(self, method, path, body=None, port=None):
        return sb.rest(port or self.port, method, path, body, key=self.info["apiKey"])

    def create(self, **body):
        status, s = self.rest("POST", "/v1/sessions", body)
        assert status == 201, s
        return s

    def sql(self, query):
        out = subprocess.run(["psql", "-AtqX", self.info["postgres"]["url"], "-c", query], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def owner(self, session_id):
        """The index (0-based) of the node serving the session, or None."""
        owner = self.sql(f"SELECT owner FROM sessions WHERE id = '{session_id}'")
        for k, n in enumerate(self.info["nodes"]):
            if owner.startswith(n["name"] + "#"):
                return k
        return None

    def node_port(self, k):
        return int(self.info["nodes"][k]["url"].rsplit(":", 1)[1])

    def log_events(self, k, event):
        path = os.path.join(self.dir, f"node{k + 1}", "traffic.jsonl")
        with open(path) as f:
            return [json.loads(line) for line in f if f'"event":"{event}"' in line]

    def restart(self, k):
        self.info = self.script("node", str(k + 1))

    @staticmethod
    def alive(pid):
        """False once the process is gone or a zombie not yet reaped."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def revive(self):
        """Starts again every node a test killed or drained."""
        for k, n in enumerate(self.info["nodes"]):
            if not self.alive(n["pid"]):
                self.restart(k)

    def down(self):
        self.script("down", *(["--keep-logs"] if os.environ.get("SB_KEEP_CLUSTER") else []))


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.down()


async def reconnect(session, role, timeout=20, url=None, **hello):
    """Connects `role` until a node serves the session (503 `session_moved` and refused
    connections are retried, as the SDK does)."""
    deadline = time.time() + timeout
    while True:
        try:
            if url is None:
                return await Peer.connect(session, role, **hello)
            token = session["clientToken"] if role == "client" else session["workerToken"]
            ws = await websockets.connect(f"{url}?role={role}&token={token}", max_size=None, open_timeout=5)
            p = Peer(ws, role)
            await p.send({"type": f"{role}.hello", "protocolVersion": 1, **hello})
            p.hello = await p.expect("server.hello")
            return p
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException) as e:
            assert time.time() < deadline, f"no node served {role} in {timeout} s: {e!r}"
            await asyncio.sleep(0.1)


async def served(cluster, cid, **body):
    """A new session with its worker and client connected through HAProxy and one command run."""
    s = cluster.create(**body)
    w = await Peer.connect(s, "worker")
    c = await Peer.connect(s, "client")
    await command(w, c, cid)
    return s, w, c


async def command(w, c, cid):
    await w.send({"type": "worker.command", "id": cid, "command": "content"})
    cmd = await c.expect("server.command", id=cid)
    await c.send({"type": "client.command_response", "id": cid, "result": {"value": cid}})
    res = await w.expect("server.command_result", id=cid)
    assert res["result"] == {"value": cid}
    return cmd, res


def test_sessions_route_by_id_and_lists_come_from_any_node(cluster):
    async def go():
        s = cluster.create(metadata={"n": 1})
        # Nobody serves a new session until a peer or a call reaches a node.
        assert cluster.owner(s["sessionId"]) is None
        assert s["websocketUrl"].startswith(cluster.info["url"].replace("http", "ws"))
        w = await Peer.connect(s, "worker")
        c = await Peer.connect(s, "client")
        cmd, res = await command(w, c, "c1")
        assert cmd["seq"] == 1 and res["seq"] == 1
        k = cluster.owner(s["sessionId"])
        assert k is not None
        # REST for the session goes to the same node (the balancer hashes on the id).
        status, info = cluster.rest("GET", f"/v1/sessions/{s['sessionId']}")
        assert status == 200 and info["workerConnected"] and info["counts"]["commands"] == 1
        assert cluster.owner(s["sessionId"]) == k
        for n in range(3):
            status, page = cluster.rest("GET", "/v1/sessions?limit=1000", port=cluster.node_port(n))
            assert status == 200 and s["sessionId"] in [x["sessionId"] for x in page["sessions"]]
    run(go())


def test_a_killed_node_s_session_continues_on_another_node(cluster):
    async def go():
        s, w, c = await served(cluster, "k1")
        await w.send({"type": "worker.command", "id": "k2", "command": "content"})
        k2 = await c.expect("server.command", id="k2")
        dead = cluster.owner(s["sessionId"])
        os.kill(cluster.info["nodes"][dead]["pid"], signal.SIGKILL)
        await w.closed(timeout=10)
        await c.closed(timeout=10)
        # Through the balancer: refused while the dead node's lease runs, then taken over.
        w2 = await reconnect(s, "worker", lastSeq=w.seen[-1]["seq"] if w.seen else 0)
        assert w2.hello["pending"]["id"] == "k2"
        c2 = await reconnect(s, "client", lastSeq=k2["seq"])
        again = await c2.expect("server.command", id="k2")
        assert again["seq"] > k2["seq"]  # sent again with a new seq: seqs are never reused
        await c2.send({"type": "client.command_response", "id": "k2", "result": {"value": "k2"}})
        await w2.expect("server.command_result", id="k2")
        cmd, _ = await command(w2, c2, "k3")
        assert cmd["seq"] > again["seq"]
        alive = cluster.owner(s["sessionId"])
        assert alive is not None and alive != dead
        status, journal = cluster.rest("GET", f"/v1/sessions/{s['sessionId']}/journal?limit=1000")
        results = [json.loads(e["message"]) if isinstance(e["message"], str) else e["message"] for e in journal["entries"]]
        done = [m["id"] for m in results if m.get("type") == "server.command_result"]
        assert done == ["k1", "k2", "k3"]
    try:
        run(go())
    finally:
        cluster.revive()


def test_a_paused_node_is_fenced_and_a_deadline_fires_once(cluster):
    async def go():
        s = cluster.create(config={"commandTimeoutMs": 4000})
        w = await Peer.connect(s, "worker")
        c = await Peer.connect(s, "client")
        await w.send({"type": "worker.command", "id": "p1", "command": "content"})
        await c.expect("server.command", id="p1")
        paused = cluster.owner(s["sessionId"])
        pid = cluster.info["nodes"][paused]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            # The balancer marks the node down and cuts its connections; its lease lapses
            # and another node takes the session with its pending command and deadline.
            await w.closed(timeout=10)
            w2 = await reconnect(s, "worker")
            assert w2.hello["pending"]["id"] == "p1"
            taken = cluster.owner(s["sessionId"])
            assert taken is not None and taken != paused
            res = await w2.expect("server.command_result", id="p1", timeout=10)
            assert res["error"]["code"] == "timeout"
        finally:
            os.kill(pid, signal.SIGCONT)
        # The node wakes with its own deadline overdue: its write is refused (fenced) or its
        # lapsed lease makes it drop every session first. Either way nothing it does lands.
        # Its lease lapsed while it was stopped, so it also notices that (within a third of a
        # lease); the next test starts after it has.
        sb.wait_until(lambda: cluster.log_events(paused, "lease_lost"), what="the woken node to notice its lapsed lease")
        status, journal = cluster.rest("GET", f"/v1/sessions/{s['sessionId']}/journal?limit=1000")
        msgs = [json.loads(e["message"]) if isinstance(e["message"], str) else e["message"] for e in journal["entries"]]
        assert [m["id"] for m in msgs if m.get("type") == "server.command_result"] == ["p1"]
        assert cluster.owner(s["sessionId"]) == taken
    run(go(), timeout=90)


def test_a_peer_at_another_node_gets_the_session_handed_over(cluster):
    async def go():
        s, w, c = await served(cluster, "h1")
        owner = cluster.owner(s["sessionId"])
        other = (owner + 1) % 3
        url = f"ws://127.0.0.1:{cluster.node_port(other)}/sessions/{s['sessionId']}/ws"
        # Without the session's token nobody can have it moved.
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(f"{url}?role=worker&token=wt_wrong", open_timeout=5)
        assert refused.value.response.status_code == 401
        assert cluster.sql(f"SELECT wanted_by IS NULL FROM sessions WHERE id = '{s['sessionId']}'") == "t"
        token = s["workerToken"]
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(f"{url}?role=worker&token={token}", open_timeout=5)
        assert refused.value.response.status_code == 503
        assert json.loads(refused.value.response.body)["error"]["code"] == "session_moved"
        # The owner hands it over (its peers are told 4012) and the other node serves it.
        assert await w.closed(timeout=10) == 4012
        w2 = await reconnect(s, "worker", url=url, lastSeq=1)
        assert cluster.owner(s["sessionId"]) == other
        # Its client follows; the next command runs end to end on the new owner.
        assert await c.closed(timeout=10) == 4012
        c2 = await reconnect(s, "client", url=url, lastSeq=1)
        await command(w2, c2, "h2")
        status, info = sb.rest(cluster.node_port(other), "GET", f"/v1/sessions/{s['sessionId']}", key=cluster.info["apiKey"])
        assert status == 200 and info["pending"] is None and info["counts"]["commands"] == 2
    run(go())


def test_a_draining_node_hands_its_sessions_over(cluster):
    async def go():
        s, w, c = await served(cluster, "d1")
        owner = cluster.owner(s["sessionId"])
        os.kill(cluster.info["nodes"][owner]["pid"], signal.SIGTERM)
        assert await w.closed(timeout=10) == 4012
        assert await c.closed(timeout=10) == 4012
        w2 = await reconnect(s, "worker", lastSeq=1)
        c2 = await reconnect(s, "client", lastSeq=1)
        assert w2.hello["phase"] == "active" and w2.hello["pending"] is None
        cmd, _ = await command(w2, c2, "d2")
        assert cmd["seq"] > 1
        assert cluster.owner(s["sessionId"]) not in (None, owner)
        return owner
    owner = None
    try:
        owner = run(go())
    finally:
        # A draining node answers 503 until it has exited: the next test must not meet it.
        if owner is not None:
            pid = cluster.info["nodes"][owner]["pid"]
            sb.wait_until(lambda: not cluster.alive(pid), timeout=30, what="the drained node to exit")
        cluster.revive()


def test_a_session_nobody_connects_to_is_adopted_and_expires(cluster):
    s = cluster.create(config={"connectTimeoutMs": 1000})
    # No peer and no call: a node adopts it (a lease after it was stored) and its timer fires.
    sb.wait_until(lambda: cluster.sql(f"SELECT phase || ' ' || reason FROM sessions WHERE id = '{s['sessionId']}'") == "expired connect_timeout",
                  timeout=20, what="the connect timeout of an unserved session")

"""Helpers to drive Switchboard sessions from tests: REST calls and JSON WebSocket peers."""
import asyncio
import json
import time
import urllib.error
import urllib.request

import websockets

import contract

API_KEY = "test-key"


def wait_until(predicate, timeout=15, what="condition"):
    """Polls `predicate` until it holds; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def rest(port, method, path, body=None, key=API_KEY, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = "Bearer " + key
    h.update(headers or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw_body = r.read()
            if method != "HEAD":
                contract.check_rest(port, method, path, r.status, r.headers.get("Content-Type"), raw_body)
            text = raw_body.decode()
            return r.status, (json.loads(text) if text and r.headers.get("Content-Type", "").startswith("application/json") else text)
    except urllib.error.HTTPError as e:
        raw_body = e.read()
        if raw_body and method != "HEAD":
            contract.check_rest(port, method, path, e.code, e.headers.get("Content-Type"), raw_body)
        text = raw_body.decode()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def create(port, **body):
    status, s = rest(port, "POST", "/v1/sessions", body)
    assert status == 201, s
    return s


_open = []


class Peer:
    """A worker, client or debug connection speaking JSON text messages."""

    def __init__(self, ws, role):
        self.ws = ws
        self.role = role
        self.seen = []

    @classmethod
    async def connect(cls, session, role, hello=True, **hello_fields):
        token = session["clientToken"] if role == "client" else session["workerToken"]
        ws = await websockets.connect(f"{session['websocketUrl']}?role={role}&token={token}", max_size=None, open_timeout=10)
        p = cls(ws, role)
        _open.append(p)
        if hello and role != "debug":
            await p.send({"type": f"{role}.hello", "protocolVersion": 1, **hello_fields})
            p.hello = await p.expect("server.hello")
        return p

    async def send(self, msg):
        await self.ws.send(json.dumps(msg) if not isinstance(msg, (str, bytes)) else msg)

    async def recv(self, timeout=5):
        m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        contract.check_server_message(m, self.role)
        self.seen.append(m)
        return m

    async def expect(self, type_, timeout=5, **fields):
        """Receives until a message of `type_` arrives (other messages are kept in `seen`)."""
        while True:
            m = await self.recv(timeout)
            if m.get("type") == type_ and all(m.get(k) == v for k, v in fields.items()):
                return m

    async def expect_error(self, code, timeout=5):
        m = await self.expect("server.error", timeout)
        assert m["code"] == code, m
        return m

    async def closed(self, timeout=5):
        """Reads until the server closes; returns the close code."""
        try:
            while True:
                m = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
                contract.check_server_message(m, self.role)
                self.seen.append(m)
        except websockets.exceptions.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None

    async def close(self):
        await self.ws.close()


async def pair(port, **create_body):
    s = create(port, **create_body)
    w = await Peer.connect(s, "worker")
    c = await Peer.connect(s, "client")
    return s, w, c


async def relay(w, c, cid, params, result, command="evaluate", timeout=5):
    """The worker sends a command and the client answers it: the client gets the params and the
    worker the result, each as sent. Returns the worker's `server.command_result`."""
    await w.send({"type": "worker.command", "id": cid, "command": command, "params": params})
    cmd = await c.expect("server.command", id=cid, timeout=timeout)
    assert cmd["params"] == params
    await c.send({"type": "client.command_response", "id": cid, "result": result})
    res = await w.expect("server.command_result", id=cid, timeout=timeout)
    assert res["result"] == result
    return res


def run(coro, timeout=60):
    """Runs a test coroutine, then closes every peer it left open (as a well-behaved SDK would)."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            peers = list(_open)
            _open.clear()
            await asyncio.gather(*(p.ws.close() for p in peers), return_exceptions=True)
    return asyncio.run(main())

#!/usr/bin/env python3
"""Measures the server's resident memory per idle WebSocket connection: without compression,
with permessage-deflate as configured by default (shared zlib streams), and with per-connection
context takeover. Each connection first exchanges one compressible message, so any zlib state
a connection keeps is allocated before the measurement.

    scripts/deflate-memory.py [CONNECTIONS]      (default 10000; needs the release build)
"""
import asyncio
import os
import re
import resource
import subprocess
import sys
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, ".build", "release", "switchboard"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * N + 1000)), hard))


def rss_kib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


async def measure(flags):
    proc = subprocess.Popen([BIN, "echo", "--port", "0"] + flags, stdout=subprocess.PIPE, text=True)
    port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
    compression = None if "--no-compression" in flags else "deflate"
    conns = []
    try:
        # Warm up the server's allocator and shared streams before the baseline.
        async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=compression) as ws:
            await ws.send("warm up " * 100)
            await ws.recv()
        await asyncio.sleep(0.5)
        before = rss_kib(proc.pid)
        message = '{"type":"server.command","params":{"selector":"#login"}} ' * 20
        for start in range(0, N, 500):
            batch = await asyncio.gather(*(websockets.connect(f"ws://127.0.0.1:{port}/", compression=compression, ping_interval=None)
                                           for _ in range(min(500, N - start))))
            for ws in batch:
                await ws.send(message)
            for ws in batch:
                await ws.recv()
            conns.extend(batch)
        await asyncio.sleep(2)
        after = rss_kib(proc.pid)
        negotiated = conns[0].protocol.extensions
        return (after - before) / len(conns), after, negotiated
    finally:
        for ws in conns:
            ws.transport.abort()
        proc.terminate()
        proc.wait()


async def main():
    print(f"{N} idle connections, each after one echoed ~1.2 KB JSON message; server RSS growth per connection:")
    for label, flags in [("no compression", ["--no-compression"]),
                         ("permessage-deflate, default (no context takeover, shared streams)", []),
                         ("permessage-deflate, --deflate-context-takeover", ["--deflate-context-takeover"])]:
        per, total, ext = await measure(flags)
        print(f"  {label:66s} {per:8.1f} KiB/connection   (RSS {total / 1024:.0f} MiB)")


asyncio.run(main())

#!/usr/bin/env python3
"""Prints the relay comparison table (medians per peer and scenario) from run-one.sh RESULT
lines, in the layout of the performance issue: 1-session latency, 100/1000-session
throughput, relay CPU per command, 64 KiB payloads, idle memory per connection.

    scripts/bench-table.py results.jsonl [storm.out]
"""
import json
import re
import statistics
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
g = defaultdict(list)
for r in rows:
    if "error" not in r:
        g[(r["peer"], r["scenario"], r["pinning"])].append(r)

NAMES = {"sb": "**Switchboard**", "tcp": "tcp floor", "go": "Go gorilla", "node": "Node ws", "py": "Python websockets", "hb": "Hummingbird/NIO"}


def med(peer, scen, key):
    v = [r[key] for r in g.get((peer, scen, "pinned"), []) if key in r]
    return statistics.median(v) if v else None


def f(x, nd=0):
    return "–" if x is None else f"{x:,.{nd}f}".replace(",", " ")


print("| relay | 1 session p50 / p99 µs | 100 sessions cmds/s | CPU µs/cmd at 100 sessions | 100 sessions p99 µs | 1 000 sessions cmds/s | 1 000 sessions p99 µs | 64 KiB params, 100 sessions cmds/s | idle RSS per connection |")
print("|---|---|---|---|---|---|---|---|---|")
for p in ["tcp", "go", "node", "py", "hb", "sb"]:
    if not any(k[0] == p for k in g):
        continue
    cps = med(p, "b", "throughput_cps")
    cpu = med(p, "b", "relay_cpu_pct")
    us = cpu / 100 * 1e6 / cps if cps and cpu else None
    rss = med(p, "d", "rss_per_conn_bytes")
    print(f"| {NAMES[p]} | {f(med(p,'a','p50_us'))} / {f(med(p,'a','p99_us'))} | {f(cps)} | {f(us)} | {f(med(p,'b','p99_us'))} | "
          f"{f(med(p,'c','throughput_cps'))} | {f(med(p,'c','p99_us'))} | {f(med(p,'b64','throughput_cps'))} | {f(rss / 1024 if rss else None, 1)} KiB |")
if len(sys.argv) > 2:
    m = re.search(r"RESULT (\{.*\})", open(sys.argv[2]).read())
    if m:
        s = json.loads(m.group(1))
        print(f"\nReconnect storm: {s['sessions']} clients dropped without a close frame and reconnected at once; "
              f"every replay delivered in {s['all_ms']:.0f} ms (p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms), {s['missing']} missing.")

#!/usr/bin/env python3
"""Prints the relay comparison table (medians per peer and scenario) from run-one.sh RESULT
lines, in the layout of the performance issue: 1-session latency, 100/1000-session
throughput, relay CPU per command, 64 KiB payloads, idle memory per connection.

    scripts/bench-table.py results.jsonl [storm.out [memory.jsonl]]

With memory.jsonl (Switchboard with store = memory, from the same run) it also prints the
memory-mode row and Switchboard's ratios against the targets: throughput against Go, latency
against the tcp floor, 64 KiB against the best peer, and what durability costs.
"""
import json
import re
import statistics
import sys
from collections import defaultdict

def load(path, rename=None):
    for line in open(path):
        if not line.strip():
            continue
        r = json.loads(line)
        if "error" not in r:
            g[(rename or r["peer"], r["scenario"], r["pinning"])].append(r)


g = defaultdict(list)
load(sys.argv[1])
if len(sys.argv) > 3:
    load(sys.argv[3], rename="sbmem")

NAMES = {"sb": "**Switchboard**", "sbmem": "**Switchboard** `store = memory`", "tcp": "tcp floor", "go": "Go gorilla", "node": "Node ws", "py": "Python websockets", "hb": "Hummingbird/NIO"}


def med(peer, scen, key):
    v = [r[key] for r in g.get((peer, scen, "pinned"), []) if key in r]
    return statistics.median(v) if v else None


def f(x, nd=0):
    return "–" if x is None else f"{x:,.{nd}f}".replace(",", " ")


print("| relay | 1 session p50 / p99 µs | 100 sessions cmds/s | CPU µs/cmd at 100 sessions | 100 sessions p99 µs | 1 000 sessions cmds/s | 1 000 sessions p99 µs | 64 KiB params, 100 sessions cmds/s | idle RSS per connection |")
print("|---|---|---|---|---|---|---|---|---|")
for p in ["tcp", "go", "node", "py", "hb", "sb", "sbmem"]:
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

if ("sb", "b", "pinned") in g:
    def ratio(a, b, nd=2):
        return "–" if a is None or not b else f"{a / b:.{nd}f}×"
    go = lambda scen: med("go", scen, "throughput_cps")
    peers64 = [med(p, "b64", "throughput_cps") for p in ["go", "node", "py", "hb"]]
    best64 = max([v for v in peers64 if v], default=None)
    print("\n| Switchboard | 100 sessions vs Go (≥ 1.5×) | 1 000 sessions vs Go (≥ 1.5×) | 1 session p50 / p99 vs floor (≤ 1.3× / 2×) | 64 KiB vs best peer (≥ 1.5×) |")
    print("|---|---|---|---|---|")
    for p in ["sb", "sbmem"]:
        if (p, "b", "pinned") not in g:
            continue
        print(f"| {NAMES[p]} | {ratio(med(p, 'b', 'throughput_cps'), go('b'))} | {ratio(med(p, 'c', 'throughput_cps'), go('c'))} | "
              f"{ratio(med(p, 'a', 'p50_us'), med('tcp', 'a', 'p50_us'))} / {ratio(med(p, 'a', 'p99_us'), med('tcp', 'a', 'p99_us'))} | "
              f"{ratio(med(p, 'b64', 'throughput_cps'), best64)} |")
    shipped, memory = med("sb", "b", "throughput_cps"), med("sbmem", "b", "throughput_cps")
    if shipped and memory:
        print(f"\nDurability costs {100 * (1 - shipped / memory):.0f} % of the memory mode's throughput at 100 sessions (target ≤ 15 %).")

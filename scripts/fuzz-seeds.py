#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (Fuzz/corpus/TARGET/seed-N). Run it after a
protocol change; the files are committed."""
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Fuzz", "corpus")


def write(target, seeds):
    """Replaces the target's seed-N files; other files (regression inputs) stay."""
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if name.startswith("seed-"):
            os.remove(os.path.join(d, name))
    for i, s in enumerate(seeds):
        with open(os.path.join(d, "seed-%03d" % i), "wb") as f:
            f.write(s)


def frame(opcode, payload, fin=True, mask=True, rsv1=False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    head = bytes([b0])
    m = 0x80 if mask else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


UPGRADE = (b"GET /sessions/s/ws?role=worker&token=t HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover\r\n\r\n")

write("http", [
    b"\x05" + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3,
    b"\xff" + UPGRADE,
    b"\x10" + b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nAuthorization: Bearer k\r\n\r\n{\"metadata\":{}}",
    b"\x00" + b"GET /v1/sessions?limit=5&cursor=%41%2 HTTP/1.0\r\n\r\n",
    b"\x03" + b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"\x40" + b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
])

hello = json.dumps({"type": "worker.hello", "protocolVersion": 1}).encode()
write("frames", [
    b"\x00" + frame(1, hello),
    b"\x02" + frame(1, b"hel", fin=False) + frame(9, b"p") + frame(0, b"lo"),
    b"\x00" + frame(2, b"\x00" * 300) + frame(8, b"\x03\xe8bye"),
    b"\x01" + frame(1, "é€😀".encode(), mask=False),
    b"\x00" + frame(1, b"\xc3\x28"),
    b"\x00" + frame(1, b"x" * 70000),
])

write("inflate", [
    b"\x00" + frame(1, deflate(hello), mask=False, rsv1=True),
    b"\x01" + frame(1, deflate(b"\x00" * 200000), mask=False, rsv1=True),
    b"\x00" + frame(1, deflate(b"abc" * 10), fin=False, mask=False, rsv1=True) + frame(0, deflate(b"def"), mask=False),
])

# Strings are scanned eight bytes at a time: special bytes at each offset of a word and next to
# the end of the text, long plain runs that are cut or end in a control byte, high bytes
# (valid and invalid UTF-8) that must not be taken for special ones, runs of escapes.
words = []
for k in range(9):
    for special in [b'\\"', b'\\\\', b'\x01', b'\x1f', b'\x7f', b'\xc3\xa9', b'\xff', b'\\u0000']:
        words.append(b'"' + b"a" * k + special + b"b" * (8 - k) + b'"')
        words.append(b'"' + b"a" * (k + 8) + special)  # cut at the end of the text
write("json", [s.encode() for s in [
    '{"a":[1,2.5,-3e10,true,false,null],"b":{"c":"\\u00e9\\ud83d\\ude00"}}',
    '[' * 40 + ']' * 40, '"\\ud800"', '1e400', '{"x":1,"x":2}', '-0.0e-0', '{"k":"' + "v" * 300 + '"}',
]] + words + [
    b'"' + b"x" * (1 << 17) + b'"', b'"' + b"x" * ((1 << 17) + 7), b'"' + b"x" * 65_535 + b"\x00" + b'"',
    b'"' + b"\x80\xbf\xfe" * 4000 + b'"', b'"' + b'\\"' * 20000 + b'"', b'{"r":"' + b"y" * 65_536 + b'","n":1}',
] + [
    # ASCII runs skip UTF-8 validation: an invalid sequence after runs of every alignment,
    # with and without an escape before it (the escaped path), and long valid multi-byte text.
    b'"' + b"a" * k + esc + bad + b'"'
    for k in (0, 7, 8, 15, 16, 1_023) for esc in (b"", b"\\n")
    for bad in (b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98")
] + [
    b'"' + b"a" * 65_535 + b"\xc3" + b'"', b'"' + "é".encode() * 32_768 + b'"', b'["' + "😀".encode() * 16_384 + b'",' + b'"\\u00e9\xff"]',
    # Numbers at and past the edges of Int and Double.
    b"-9223372036854775808", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
    b"1" + b"0" * 400, b"-" + b"9" * 20_000, b"1e-400", b"1e99999999999999999999", b"0." + b"0" * 5000 + b"1",
    # Strings the writer must escape again on the way out (the round trip): every control
    # character, quotes and backslashes in long runs, escapes in keys, text the writer takes
    # from a String's own bytes in one piece (64 KiB of escapes, then multi-byte text).
    b'"' + b"".join(b"\\u%04x" % c for c in range(32)) + b'"', b'{"\\"\\\\\\n":"\\t\\r\\b\\f\\/"}',
    b'"' + b'\\\\\\"' * 16_384 + b'"', b'"' + b"\\u0001" * 10_923 + "é😀".encode() * 4_000 + b'"',
    b'{"' + b"k" * 65_536 + b'":"' + b"\\u001f" * 100 + b'"}',
    # The log's compact writer: whitespace of every kind between tokens, runs of it, control
    # bytes outside and inside strings, keys set off from their colon, strings whose closing
    # quote falls at every alignment, a backslash last or before a control byte, escapes that
    # decode shorter than the bound, surrogate pairs where the cut falls, many short strings.
    b'{\r\n\t"a" :\n [ 1 ,\t"' + b"b" * 40 + b'" ] , "c"\t\n:\r"' + b"d" * 30 + b'"}',
    b" " * 65_536 + b"1", b"\n" * 10_000 + b'"' + b"x" * 100 + b'"' + b"\t" * 10_000,
    b'{\x01"a\x1f":\x00"' + b"z" * 50 + b'"\x07}', b'["ab\ncd' + b"e" * 40 + b'"]', b'["' + b"q" * 30 + b'\\\n"]',
    b'{"' + b"k" * 40 + b'"' + b" " * 9 + b':"v"}', b'"abc\\', b'"' + b"a" * 40 + b'\\',
] + [b'["' + b"s" * k + b'"' + b"\x02" * (k % 3) + b"]" for k in range(0, 40)] + [
    b'"' + b"\\/" * 15 + b'"', b'{"p":"' + b"\\/" * 40_000 + b'"}',
    b'"' + b"\\ud83d\\ude00" * 5_000 + b'"', b'["' + "😀".encode() * 7 + b'x"]',
    b"[" + b",".join([b'"a"'] * 20_000) + b"]", b"[" * 60 + b'"' + b"w" * 1_000 + b'"' + b"]" * 60,
])

commands = [
    {"type": "worker.command", "id": "c1", "command": "navigate", "params": {"url": "https://example.com", "waitUntil": "load"}},
    {"type": "worker.command", "command": "fill", "params": {"selector": "#p", "value": "secret"}, "timeoutMs": 5000},
    {"type": "worker.command", "command": "waitForSelector", "params": {"selector": "#a", "timeout": 1e19}},
    {"type": "worker.command", "command": "waitForNavigation", "params": {"urlPattern": "^(a+)+$", "timeout": 100}},
    {"type": "worker.command", "command": {"action": "select", "selector": "#s", "value": "x"}},
    {"type": "worker.yield_to_user", "id": "y1", "conditions": [{"type": "url", "pattern": "/done$"},
                                                                {"type": "networkRequest", "url": "api", "method": "post", "bodyContains": "ok"},
                                                                {"type": "selector", "selector": "#ok"}], "timeoutMs": 60000, "optional": True},
    {"type": "worker.cancel", "id": "c1"}, {"type": "worker.complete", "result": {"ok": 1}}, {"type": "worker.fail", "error": {"code": "x"}},
    {"type": "worker.hello", "protocolVersion": 1, "lastSeq": 3, "events": ["navigation"]},
]
client = [
    {"type": "client.hello", "protocolVersion": 1, "lastSeq": 0, "capabilities": ["cdp"]},
    {"type": "client.command_response", "id": "c1", "result": {"value": 1}},
    {"type": "client.command_response", "id": "c1", "error": {"code": "timeout", "message": "m"}},
    {"type": "client.events", "clientSeq": 1, "events": [{"type": "navigation", "ts": 1700000000000, "payload": {"url": "https://a/done", "isMainFrame": True}},
                                                         {"type": "net.response", "ts": "2026-01-01T00:00:00Z", "payload": {"url": "https://a/api", "method": "POST", "status": 200, "body": "ok"}},
                                                         {"type": "condition.matched", "payload": {"yieldId": "y1", "index": 2}}]},
    {"type": "client.console_activity", "clientSeq": 2, "entries": [{"ts": 1e19, "level": "log", "text": "hi"}]},
    {"type": "client.network_activity", "entries": [{"url": "https://x", "status": 404}]},
    {"type": "client.cdp", "channel": 1, "data": json.dumps({"id": 1, "result": {}})},
    {"type": "client.cdp_close", "channel": 9007199254740991, "reason": "x"},
]
# The worst numbers and sizes: ids and seqs at and past the ends of Int64, fractions and
# exponents where integers belong, CDP frames that are not one object or that are huge.
extremes = [
    {"type": "worker.hello", "protocolVersion": 1, "lastSeq": 9223372036854775807},
    {"type": "client.hello", "protocolVersion": 1, "lastSeq": -1, "capabilities": ["cdp"]},
    {"type": "worker.command", "id": "i" * 60000, "command": "url"},
    {"type": "worker.command", "id": "a\"b\u0000c\U0001F600", "command": "url", "timeoutMs": 1e300},
    {"type": "client.events", "clientSeq": 9223372036854775807, "events": [{"type": "navigation", "ts": -1e19, "payload": {}}]},
    {"type": "client.cdp", "channel": 9223372036854775807, "data": json.dumps({"id": 1e308, "result": {}})},
    {"type": "client.cdp", "channel": -1, "data": "[]"},
    {"type": "client.cdp", "channel": 1, "data": "{}{}"},
    {"type": "client.cdp", "channel": 1, "data": json.dumps({"id": 1, "result": {"data": "A" * 60000}})},
    # Relayed values of 64 KiB and more, with quotes, backslashes and control escapes at word edges.
    {"type": "worker.command", "command": "evaluate", "params": {"expression": ("a" * 7 + "\"\\\n") * 6000}},
    {"type": "client.command_response", "id": "c1", "result": {"value": "z" * (1 << 17)}},
    # U+0000 in ids, event types and sources (refused: stored as text): alone, first, last, at
    # the 128-character bound of an id and one past it, after a 4-byte character, at the end
    # of a 60 000-character type, in the last event of a full batch.
    {"type": "worker.command", "id": "\u0000", "command": "url"},
    {"type": "worker.command", "id": "\u0000" + "a" * 127, "command": "url"},
    {"type": "worker.command", "id": "a" * 127 + "\u0000", "command": "url"},
    {"type": "worker.command", "id": "a" * 128 + "\u0000", "command": "url"},
    {"type": "worker.command", "id": "\U0001F600" * 127 + "\u0000", "command": "url"},
    {"type": "worker.command", "id": "a" * 128, "command": "url"},
    {"type": "worker.cancel", "id": "c\u0000"},
    {"type": "client.command_response", "id": "c1\u0000", "result": {}},
    {"type": "client.events", "clientSeq": 1, "events": [{"type": "\u0000"}]},
    {"type": "client.events", "clientSeq": 1, "events": [{"type": "n" * 60000 + "\u0000", "payload": {}}]},
    {"type": "client.events", "clientSeq": 1, "events": [{"type": "console", "source": "\u0000", "payload": {"v": "\u0000"}}]},
    {"type": "client.events", "clientSeq": 1, "events": [{"type": "console"}] * 999 + [{"type": "console\u0000"}]},
    # Timeouts at and past every bound the session applies from its settings (the largest a
    # command or a yield may ask for, zero, negative, the ends of Int64, past them).
    {"type": "worker.command", "command": "url", "timeoutMs": 9223372036854775807},
    {"type": "worker.command", "command": "url", "timeoutMs": -9223372036854775808},
    {"type": "worker.command", "command": "url", "timeoutMs": 0},
    {"type": "worker.command", "command": "url", "timeoutMs": 600001},
    {"type": "worker.yield_to_user", "id": "y", "timeoutMs": 9223372036854775807, "conditions": [{"type": "url", "pattern": "x"}]},
    {"type": "worker.yield_to_user", "id": "y", "timeoutMs": -1, "conditions": [{"type": "url", "pattern": "x"}]},
    {"type": "worker.yield_to_user", "id": "y", "timeoutMs": 1e300, "conditions": [{"type": "url", "pattern": "x"}]},
]
write("inbound", [json.dumps(m).encode() for m in commands + client + extremes]
      + [b"{not json", b'{"type":"worker.command","command":"url","timeoutMs":9007199254740993}',
         b'{"type":"worker.hello","protocolVersion":1,"lastSeq":1e300}', b'{"type":"client.cdp","channel":1.5,"data":"{}"}'])


def rec(op, payload=b""):
    return bytes([op]) + struct.pack("<H", len(payload)) + payload


def msg(m):
    return json.dumps(m, separators=(",", ":")).encode()


W, C = 3, 5
hello_w = rec(W, msg({"type": "worker.hello", "protocolVersion": 1}))
hello_c = rec(C, msg({"type": "client.hello", "protocolVersion": 1}))
session = [
    rec(0) + rec(1) + hello_w + hello_c + rec(W, msg(commands[0])) + rec(11) + rec(C, msg(client[1])) + rec(11),
    rec(0) + rec(1) + hello_w + hello_c + rec(W, msg({"type": "worker.command", "id": "t", "command": "url"})) + rec(13)
    + rec(0) + rec(W, msg({"type": "worker.hello", "protocolVersion": 1, "lastSeq": 1})) + rec(10) + rec(10) + rec(11),
    rec(0) + rec(1) + rec(2) + hello_w + hello_c + rec(W, msg(commands[5])) + rec(11) + rec(C, msg(client[3])) + rec(11) + rec(14, b"\x02"),
    rec(0) + rec(1) + hello_w + hello_c + rec(12) + rec(C, msg(client[3])) + rec(W, msg(commands[1])) + rec(12) + rec(11) + rec(13) + rec(1)
    + rec(C, msg({"type": "client.hello", "protocolVersion": 1, "lastSeq": 2})) + rec(11),
    rec(0) + hello_w + rec(W, b"{not json") + rec(7, b"{}") + rec(14, b"\x01") + rec(11) + rec(10),
    rec(1) + hello_c + rec(C, msg(client[4])) + rec(C, msg(client[1])) + rec(8) + rec(9) + rec(10) + rec(10) + rec(10) + rec(13) + rec(10),
    # CDP channels (op 15: open, a worker frame, a refused one, the client's frame and close,
    # discovery, the socket closing, the client leaving).
    rec(0) + rec(1) + hello_w + rec(C, msg({"type": "client.hello", "protocolVersion": 1, "capabilities": ["cdp"], "cdpVersion": {"Browser": "X/1"}}))
    + rec(15, b"\x00") + rec(15, b"\x01" + msg({"id": 1, "method": "Runtime.evaluate", "params": {"expression": "1"}}))
    + rec(15, b"\x01" + msg({"id": 2, "method": "Browser.close", "sessionId": "S"})) + rec(C, msg(client[6])) + rec(15, b"\x00")
    + rec(C, msg({"type": "client.cdp_close", "channel": 2, "reason": "gone"})) + rec(15, b"\x03") + rec(15, b"\x02") + rec(9),
]
# Enough commands to pass the harness's stored-journal and replay bounds (trims), with the
# longest ids a record holds, then a restart and the same ids again (they must stay used);
# CDP worker frames with ids at the ends of Int64 and a frame that is not an object.
def command(cid):
    return rec(W, msg({"type": "worker.command", "id": cid, "command": "url"})) + rec(11) \
        + rec(C, msg({"type": "client.command_response", "id": cid, "result": {"url": "u"}})) + rec(11)
# (An id with U+0000 is refused; its neighbour without one is stored.)
ids = ["x" * 20000, "a\"b\u0000c\U0001F600", "a\"b\\c\U0001F600"] + ["c%d" % i for i in range(40)]
session.append(rec(0) + rec(1) + hello_w + hello_c + b"".join(command(i) for i in ids) + rec(13) + rec(0) + rec(1)
               + rec(W, msg({"type": "worker.hello", "protocolVersion": 1, "lastSeq": 9223372036854775807}))
               + rec(C, msg({"type": "client.hello", "protocolVersion": 1, "lastSeq": -1})) + command(ids[0]) + command(ids[1])
               + rec(14, b"\x03"))
session.append(rec(0) + rec(1) + hello_w + rec(C, msg({"type": "client.hello", "protocolVersion": 1, "capabilities": ["cdp"]}))
               + rec(15, b"\x00") + rec(15, b"\x01" + msg({"id": 9223372036854775807, "method": "M" * 30000}))
               + rec(15, b"\x01" + msg({"id": -1, "method": "Page.navigate"})) + rec(15, b"\x00")
               + rec(15, b"\x01" + msg({"id": 1e308, "method": "Page.navigate"})) + rec(15, b"\x00") + rec(15, b"\x01[1,2]")
               + rec(C, msg({"type": "client.cdp", "channel": 9223372036854775807, "data": "{}"})))
# The same timeouts through a session: each command or yield, then its timer fires, a commit
# and a restart while it is pending (its deadline comes back from the stored state).
for m in extremes[-7:]:
    session.append(rec(0) + rec(1) + hello_w + hello_c + rec(W, msg(m)) + rec(11) + rec(10) + rec(11)
                   + rec(W, msg(m)) + rec(11) + rec(13) + rec(0) + rec(1) + hello_w + hello_c + rec(10) + rec(11))
write("session", session)
print("seeds written to", os.path.normpath(ROOT))

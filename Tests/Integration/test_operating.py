"""Operating the daemon: configuration precedence and errors, metrics, drain on SIGTERM,
log reopening on SIGHUP, the session CLI, Origin allow-list, injection scripts."""
import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import sb
from conftest import BIN, Proc
from sb import Peer, run


def serve(args, env=None, timeout=20):
    return subprocess.run([BIN, "serve"] + args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("args,env,named", [
    (["--port", "0", "--config", "CFG"], {}, "port = 99999 (from CFG:2): must be an integer from 0 to 65535"),
    (["--port", "0"], {"SWITCHBOARD_RATE_BURST": "lots"}, 'rate_burst = "lots" (from SWITCHBOARD_RATE_BURST): must be an integer'),
    (["--port", "0"], {"SWITCHBOARD_COMPRESSION": "maybe"}, 'compression = "maybe" (from SWITCHBOARD_COMPRESSION): must be true or false'),
    (["--config", "BADKEY"], {}, "colour = "),
    (["--port", "0", "--hello-timeout-ms", "0"], {}, "hello_timeout_ms = 0 (from --hello-timeout-ms)"),
    (["--port", "0", "--tls-cert", "/x.pem"], {}, "tls_cert and tls_key go together"),
])
def test_bad_configuration_names_key_value_source(tmp_path, args, env, named):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("# test\nport = 99999\n")
    badkey = tmp_path / "badkey.toml"
    badkey.write_text('colour = "blue"\n')
    args = [a.replace("BADKEY", str(badkey)).replace("CFG", str(cfg)) for a in args]
    named = named.replace("CFG", str(cfg))
    out = serve(args + ["--data-dir", str(tmp_path / "d")], env=dict(os.environ, **env))
    assert out.returncode == 78, out.stderr
    assert named in out.stderr


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text('port = 1\nrate_burst = 5\napi_keys = ["from-file"]\ndata_dir = "%s"\n' % (tmp_path / "d"))
    env = dict(os.environ, SWITCHBOARD_PORT="2", SWITCHBOARD_RATE_BURST="7")
    # flags beat env beat file: the port from the flag (0: a free port), the key and data dir from the file.
    p = subprocess.Popen([BIN, "serve", "--config", str(cfg), "--port", "0"], env=env, stdout=subprocess.PIPE, text=True)
    import re
    try:
        line = p.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        assert port not in (1, 2)
        assert sb.rest(port, "POST", "/v1/sessions", {}, key="from-file")[0] == 201
        assert os.path.exists(tmp_path / "d" / "traffic.jsonl")
    finally:
        p.terminate()
        p.wait()


def test_example_config_file_is_valid_and_documents_every_key():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    text = open(os.path.join(root, "config", "switchboard.toml")).read()
    documented = {l.lstrip("# ").split(" =")[0] for l in text.splitlines() if " = " in l and l.startswith("# ") and not l.startswith("#  ")}
    out = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "config/switchboard.toml" in out.stdout
    for key in ["host", "port", "data_dir", "api_keys", "public_url", "tls_cert", "tls_key", "allowed_origins", "compression",
                "deflate_context_takeover", "hello_timeout_ms", "handshake_timeout_ms", "ping_interval_ms", "dead_peer_ms",
                "max_message_size", "max_send_queue", "rate_per_second", "rate_burst", "max_debug_connections",
                "replay_max_messages", "replay_max_bytes", "injection_scripts", "redaction", "log_max_bytes", "log_keep",
                "drain_ms", "default_connect_timeout_ms", "max_command_timeout_ms"]:
        assert key in documented, key


def test_metrics_parse_and_move_with_traffic(server):
    def scrape():
        status, text = sb.rest(server.port, "GET", "/metrics", key=None)
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    before = scrape()

    async def go():
        s, w, c = await sb.pair(server.port)
        for i in range(3):
            await w.send({"type": "worker.command", "id": f"m{i}", "command": "url"})
            await c.expect("server.command")
            await c.send({"type": "client.command_response", "id": f"m{i}", "result": {}})
            await w.expect("server.command_result")
        await w.send({"type": "worker.cancel", "id": "nope"})
        await w.expect_error("unknown_command_id")
        during = scrape()
        assert during[("switchboard_peers", (("role", "worker"),))] >= 1 and during[("switchboard_peers", (("role", "client"),))] >= 1
    run(go())
    after = scrape()
    assert after[("switchboard_commands_total", ())] - before.get(("switchboard_commands_total", ()), 0) == 3
    assert after[("switchboard_messages_out_total", (("type", "server.command"),))] >= 3
    assert after[("switchboard_errors_total", (("code", "unknown_command_id"),))] >= 1
    assert after[("switchboard_command_rtt_ms_count", ())] >= 3
    assert after[("switchboard_sessions", (("phase", "active"),))] >= 1
    assert after[("switchboard_messages_in_total", (("type", "worker.command"),))] >= 3
    assert after[("switchboard_bytes_total", (("direction", "in"),))] > before.get(("switchboard_bytes_total", (("direction", "in"),)), 0)
    assert ("switchboard_yield_seconds_count", ()) in after
    # A summary's count and sum only grow (the quantiles are over the latest commits).
    commits = ("switchboard_store_commit_ms_count", ())
    assert after[commits] > before.get(commits, 0) and after[("switchboard_store_commit_ms_sum", ())] > 0
    assert after[("process_resident_memory_bytes", ())] > 1_000_000
    assert after[("process_open_fds", ())] > 3


def test_sigterm_drains_readyz_503_peers_1001_acked_events_kept(serve_factory):
    server = serve_factory("--drain-ms", "5000")

    async def go():
        import wsraw
        s, w, c = await sb.pair(server.port)
        await c.send({"type": "client.events", "clientSeq": 1, "events": [{"type": "console", "payload": {"n": 1}}]})
        await c.expect("server.ack")
        # A debug viewer that never answers the close frame keeps the drain going for a while.
        stuck = wsraw.connect(server.port, f"/sessions/{s['sessionId']}/ws?role=debug&token={s['workerToken']}")
        server.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        status, body = sb.rest(server.port, "GET", "/readyz", key=None)
        assert status == 503 and body["error"]["code"] == "draining"
        assert sb.rest(server.port, "POST", "/v1/sessions", {})[0] == 503
        assert await w.closed() == 1001 and await c.closed() == 1001
        stuck.close()
        return s
    s = run(go())
    assert server.wait() == 0
    log = open(os.path.join(server.data_dir, "traffic.jsonl")).read()
    assert '"event":"drain"' in log and '"event":"stop"' in log
    assert '"type":"server.ack"' in log
    # The acked event survived the shutdown: a new server on the same data directory has it.
    again = Proc(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", server.data_dir, "--api-key", "test-key"],
                 r"listening on http://127\.0\.0\.1:(\d+)")
    try:
        _, body = sb.rest(again.port, "GET", f"/v1/sessions/{s['sessionId']}/events")
        assert [e["payload"] for e in body["events"]] == [{"n": 1}]
    finally:
        again.stop()


def test_sighup_reopens_the_moved_log(server):
    path = os.path.join(server.data_dir, "traffic.jsonl")
    sb.wait_until(lambda: '"event":"start"' in open(path).read(), what="the start line")
    os.rename(path, path + ".moved")
    server.signal(signal.SIGHUP)
    sb.wait_until(lambda: os.path.exists(path), what="the reopened log")
    sb.create(server.port)
    sb.wait_until(lambda: '"event":"created"' in open(path).read(), what="the created line in the new file")
    assert '"event":"start"' in open(path + ".moved").read()


def test_threads_carry_the_names_the_operations_guide_gives(server):
    """docs/operations.md names the threads `top -H` shows: the loop on the main thread, the
    store's writer and the traffic log's writer."""
    task = "/proc/%d/task" % server.pid
    names = {open(os.path.join(task, t, "comm")).read().strip() for t in os.listdir(task)}
    assert {"store-writer", "traffic-log"} <= names, names
    assert open("/proc/%d/comm" % server.pid).read().strip() == "switchboard"


def test_session_cli(server):
    env = dict(os.environ, SWITCHBOARD_URL=f"http://127.0.0.1:{server.port}", SWITCHBOARD_API_KEY="test-key")
    cli = lambda *a: subprocess.run([BIN, "session"] + list(a), capture_output=True, text=True, env=env, timeout=10)
    out = cli("create", "--metadata", '{"user_id":"u1"}', "--json")
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["phase"] == "created" and s["websocketUrl"].startswith("ws://")
    out = cli("get", s["sessionId"])
    assert out.returncode == 0 and s["sessionId"] in out.stdout and "created" in out.stdout and "u1" in out.stdout
    out = cli("list", "--limit", "5")
    assert s["sessionId"] in out.stdout
    out = cli("cancel", s["sessionId"])
    assert "failed (cancelled)" in out.stdout
    out = cli("get", "sess_missing")
    assert out.returncode != 0 and "HTTP 404" in out.stderr
    bad = subprocess.run([BIN, "session", "list"], capture_output=True, text=True, timeout=10,
                         env=dict(env, SWITCHBOARD_API_KEY="wrong"))
    assert bad.returncode != 0 and "HTTP 401" in bad.stderr
    for sub in ["serve", "session", "tail", "echo", "version"]:
        h = subprocess.run([BIN, sub, "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and "USAGE" in h.stdout.upper()


def test_bench_store_commits_every_batch_and_leaves_nothing_behind():
    import glob
    before = set(glob.glob("/tmp/switchboard-bench-store-*"))
    out = subprocess.run([BIN, "bench-store", "--commands", "300", "--batch", "7", "--sessions", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "300 commands, 3 sessions, 7 per commit" in out.stdout
    # 300 commands in commits of 7: 43 commits, each waited for.
    assert "commits: 43" in out.stdout and "store CPU per command:" in out.stdout
    assert set(glob.glob("/tmp/switchboard-bench-store-*")) == before
    bad = subprocess.run([BIN, "bench-store", "--batch", "0"], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "batch 1" in bad.stderr


def test_origin_allow_list_for_clients(serve_factory):
    server = serve_factory("--allowed-origin", "https://app.example.com")

    async def go():
        import websockets
        s = sb.create(server.port)
        url = f"{s['websocketUrl']}?role=client&token={s['clientToken']}"
        with pytest.raises(Exception) as exc:
            await websockets.connect(url, origin="https://evil.example.com")
        assert "403" in str(exc.value)
        ok = await websockets.connect(url, origin="https://app.example.com")
        await ok.close()
        native = await websockets.connect(url)  # no Origin header: a native SDK
        await native.close()
    run(go())


def test_client_hello_carries_builtin_injection_scripts(server):
    async def go():
        s = sb.create(server.port)
        c = await Peer.connect(s, "client")
        names = [x["name"] for x in c.hello["injectionScripts"]]
        assert names == ["telemetry", "network", "console", "interaction"]
        for script in c.hello["injectionScripts"]:
            assert "window.__switchboard" in script["source"] and "emit(" in script["source"]
        return c.hello["injectionScripts"]
    scripts = run(go())
    import shutil
    if shutil.which("node"):
        import tempfile
        for script in scripts:
            with tempfile.NamedTemporaryFile("w", suffix=".js", delete=False) as f:
                f.write(script["source"])
            check = subprocess.run(["node", "--check", f.name], capture_output=True, text=True)
            os.unlink(f.name)
            assert check.returncode == 0, script["name"] + ": " + check.stderr


def test_the_dockerfile_copies_what_the_manifest_needs(tmp_path):
    """The image's build stage gets only what the Dockerfile copies: with exactly that, the
    package manifest loads and names the `switchboard` product (no Docker engine needed)."""
    import re
    import shutil
    from conftest import ROOT
    dockerfile = open(os.path.join(ROOT, "Dockerfile")).read()
    build_stage = dockerfile.split("\nFROM ", 2)[1]
    copied = re.findall(r"^COPY (?!--from)(\S+) ", build_stage, re.M)
    assert "Package.swift" in copied and "Sources" in copied
    for path in copied:
        src = os.path.join(ROOT, path)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, tmp_path / path)
    out = subprocess.run(["swift", "package", "describe", "--type", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert '"switchboard"' in out.stdout

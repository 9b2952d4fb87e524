"""The README's quickstart block, executed as written against a fresh server."""
import os
import re
import subprocess

from conftest import ROOT


def test_readme_quickstart_relays_a_command(server):
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", readme, re.S).group(1)
    venv = os.environ.get("SWITCHBOARD_VENV", os.path.expanduser("~/.cache/switchboard-venv"))
    env = dict(os.environ, SB=f"http://127.0.0.1:{server.port}", KEY="test-key",
               PATH=os.path.join(venv, "bin") + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    assert '"type":"server.command"' in out.stdout
    assert '"type":"server.command_result"' in out.stdout and '"value":"Example Domain"' in out.stdout


def test_readme_sdk_quickstart_runs_the_example(server):
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"<!-- quickstart-sdk -->\s*```sh\n(.*?)```", readme, re.S).group(1)
    env = dict(os.environ, SB=f"http://127.0.0.1:{server.port}", KEY="test-key")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "client: navigate" in out.stdout and "worker: title is Example Domain" in out.stdout
    assert "client: extract" in out.stdout and "worker: screenshot 1×1" in out.stdout
    assert "worker: session complete (worker_completed)" in out.stdout


def test_readme_real_browser_in_two_terminals(server):
    """The "Drive a real browser" flow: the worker prints the client's command, which runs
    switchboard-browser against a page of the local test site."""
    import signal
    import sys
    import threading
    sys.path.insert(0, os.path.join(ROOT, "Tests", "Site"))
    import testsite
    from http.server import ThreadingHTTPServer
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), testsite.Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page = f"http://127.0.0.1:{httpd.server_address[1]}/dashboard"
    worker = subprocess.Popen(["swift", "run", "-q", "switchboard-example", "--server", f"http://127.0.0.1:{server.port}",
                               "--api-key", "test-key", "--url", page], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    browser = None
    lines = []
    try:
        for line in worker.stdout:
            lines.append(line)
            if line.strip().startswith("swift run switchboard-browser"):
                browser = subprocess.Popen(["bash", "-c", line.strip()], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        worker.wait(timeout=120)
        out = "".join(lines)
        assert worker.returncode == 0, out
        assert f"worker: navigated to {page} (status 200)" in out and "worker: title is Dashboard" in out
        assert "obstacle: none" in out and "worker: session complete (worker_completed)" in out
        assert browser is not None and browser.wait(timeout=30) == 0
    finally:
        worker.kill()
        if browser and browser.poll() is None:
            os.killpg(browser.pid, signal.SIGKILL)
        httpd.shutdown()


def test_readme_playwright_block_drives_the_session_browser(server):
    """The "Use Playwright through a session" block, run as written against a session whose
    client is switchboard-browser."""
    import signal
    import sys
    import threading
    import time
    sys.path.insert(0, os.path.join(ROOT, "Tests", "Site"))
    import sb
    import testsite
    from conftest import BIN
    from http.server import ThreadingHTTPServer
    readme = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"<!-- playwright -->\s*```python\n(.*?)```", readme, re.S).group(1)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), testsite.Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    s = sb.create(server.port)
    browser = subprocess.Popen([os.path.join(os.path.dirname(BIN), "switchboard-browser"), "--url", s["websocketUrl"],
                                "--token", s["clientToken"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")[1].get("clientConnected"):
            assert time.time() < deadline and browser.poll() is None, "the client did not connect"
            time.sleep(0.05)
        venv = os.environ.get("SWITCHBOARD_VENV", os.path.expanduser("~/.cache/switchboard-venv"))
        env = dict(os.environ, SB=f"http://127.0.0.1:{server.port}", SESSION=s["sessionId"], WORKER_TOKEN=s["workerToken"],
                   PAGE=f"http://127.0.0.1:{httpd.server_address[1]}/dashboard")
        out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", block], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr + out.stdout
        assert "title: Dashboard" in out.stdout
        # Playwright only disconnected: the user's browser and its client are still there.
        status, info = sb.rest(server.port, "GET", f"/v1/sessions/{s['sessionId']}")
        assert info["clientConnected"] and browser.poll() is None
    finally:
        if browser.poll() is None:
            os.killpg(browser.pid, signal.SIGTERM)
            browser.wait(timeout=15)
        httpd.shutdown()

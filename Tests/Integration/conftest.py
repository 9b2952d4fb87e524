"""Starts switchboard processes on free loopback ports for the integration tests."""
import os
import re
import resource
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, ".build", "debug", "switchboard"))

# Enough descriptors for the 1 000-connection test (children inherit the limit).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < 8192:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, _hard), _hard))


class Proc:
    def __init__(self, args, ready_pattern, env=None, preexec_fn=None):
        self.args = args
        self.proc = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=dict(os.environ, **(env or {})), preexec_fn=preexec_fn)
        self.port = None
        self.lines = []
        deadline = time.time() + 20
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(ready_pattern, line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("switchboard did not start: %r" % "".join(self.lines))

    @property
    def pid(self):
        return self.proc.pid

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=15):
        return self.proc.wait(timeout=timeout)

    def output(self):
        rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
        return "".join(self.lines) + (rest or "")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def echo_factory():
    procs = []

    def start(*extra):
        p = Proc(["echo", "--host", "127.0.0.1", "--port", "0"] + list(extra), r"listening on ws://127\.0\.0\.1:(\d+)/")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def echo(echo_factory):
    return echo_factory()


API_KEY = "test-key"


@pytest.fixture
def serve_factory(tmp_path):
    procs = []

    def start(*extra, data_dir=None, env=None, preexec_fn=None):
        """`env`: configuration as SWITCHBOARD_* variables, e.g. {"max_sessions": 2}."""
        d = data_dir or str(tmp_path / ("data%d" % len(procs)))
        variables = {"SWITCHBOARD_" + k.upper(): str(v) for k, v in (env or {}).items()}
        p = Proc(["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", d, "--api-key", API_KEY] + list(extra),
                 r"listening on http://127\.0\.0\.1:(\d+)", env=variables, preexec_fn=preexec_fn)
        p.data_dir = d
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def server(serve_factory):
    return serve_factory()

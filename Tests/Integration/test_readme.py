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
    assert "worker: session complete (worker_completed)" in out.stdout

"""Detached studies through Ray Jobs: a real `ray start --head` cluster with its job server, all on
127.0.0.1; submit --detach, status, logs and stop through the installed CLI."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli as _run


def run(*args):
    # `ray start` turns on Ray's token authentication (its token file is under ~/.ray); a client
    # process must say it uses tokens too
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        return _run(*args)
    finally:
        if old is None:
            del os.environ["RAY_AUTH_MODE"]
        else:
            os.environ["RAY_AUTH_MODE"] = old

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def job_server():
    # as from an activated venv on the head: the job's entrypoint finds `elrbench` on PATH
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
               PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    tmp = tempfile.mkdtemp(prefix="elrbench-rj-")
    dash = _free_port()
    started = subprocess.run(
        [RAY, "start", "--head", f"--port={_free_port()}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         f"--temp-dir={tmp}", "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        _assert_listens_on_loopback_only(tmp)
        yield f"http://127.0.0.1:{dash}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def _assert_listens_on_loopback_only(temp_dir: str) -> None:
    """Every listening TCP socket of the cluster's processes (found by their temp dir) is on 127.0.0.1."""
    ours = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if temp_dir in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore"):
                ours |= {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
    addrs = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f"socket:[{f[9]}]" in ours:  # LISTEN
                addrs.append(f[1].split(":")[0])
    assert addrs, "found no listening socket of the cluster"
    # 127.0.0.1 (little-endian hex) or ::ffff:127.0.0.1; never 0.0.0.0, ::, or another address
    assert set(addrs) <= {"0100007F", "0000000000000000FFFF00000100007F"}, addrs


def _spec(tmp_path, base_spec, steps):
    base_spec["grid"].update(seed=[0, 1])
    base_spec["budget"].update(steps=steps, log_every=10)
    base_spec["resources"] = {"cpus_per_worker": 1}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    return path


def _job_id(out: str) -> str:
    return out.split("submitted job ")[1].split()[0]


def _wait(job, address, states, timeout=240) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = run("status", job, "--address", address)
        assert st.returncode == 0, st.stderr
        if any(f": {s}" in st.stdout for s in states):
            return st.stdout
        time.sleep(2)
    raise AssertionError(f"job {job} never reached {states}: {st.stdout}")


def test_a_detached_study_runs_to_the_end(job_server, tmp_path, base_spec):
    r = run("submit", str(_spec(tmp_path, base_spec, 20)), "--detach", "--address", job_server)
    assert r.returncode == 0, r.stderr[-3000:]
    job = _job_id(r.stdout)
    assert _wait(job, job_server, ["SUCCEEDED", "FAILED", "STOPPED"]).count("SUCCEEDED") == 1
    logs = run("logs", job, "--address", job_server)
    assert logs.returncode == 0 and "trainability by depth" in logs.stdout and "2 trials:" in logs.stdout
    assert len(list((tmp_path / "runs").glob("*/trials/*/result.json"))) == 2


def test_a_detached_study_can_be_stopped(job_server, tmp_path, base_spec):
    r = run("submit", str(_spec(tmp_path, base_spec, 3000)), "--detach", "--address", job_server)
    job = _job_id(r.stdout)
    _wait(job, job_server, ["RUNNING"])
    s = run("stop", job, "--address", job_server)
    assert s.returncode == 0 and "stop requested" in s.stdout
    assert "STOPPED" in _wait(job, job_server, ["STOPPED", "SUCCEEDED", "FAILED"])


def test_job_commands_fail_clearly(job_server, tmp_path, base_spec):
    spec = _spec(tmp_path, base_spec, 20)
    r = run("submit", str(spec), "--detach")
    assert r.returncode == 2 and "--detach needs --address" in r.stderr
    r = run("status", "no-such-job", "--address", job_server)
    assert r.returncode == 2 and "not found" in r.stderr
    r = run("logs", "x", "--address", f"http://127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "no Ray job server answers there" in r.stderr
    r = _run("status", "x", "--address", job_server)  # without RAY_AUTH_MODE=token
    assert r.returncode == 2 and "RAY_AUTH_MODE=token" in r.stderr

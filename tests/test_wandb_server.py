"""The online W&B path against a real W&B-protocol server on 127.0.0.1 (openwandb 0.5.23, MIT, in a
virtualenv of its own: tests/wandb_server/requirements.txt), set up as a user of W&B Server would:
`wandb login --host URL KEY` (a netrc entry for that host and wandb's settings file, nothing else).
What arrived is read through the server's own REST API (its GraphQL does not serve wandb.Api() of
wandb 0.31). The server has no Reports: `--wandb-report` is tested by validating the Report against
wandb-workspaces' own models (tests/test_tracking.py). A server that cannot start fails the test."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXE

REQUIREMENTS = Path(__file__).parent / "wandb_server" / "requirements.txt"
WANDB = str(Path(EXE).parent / "wandb")
KEY = "0123456789abcdef0123456789abcdef01234567"  # the server takes any key (its admin user)
SPEC = {
    "name": "online",
    "workloads": [{"name": "mlp", "model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5}],
    "grid": {"depth": [2, 3], "lr": [0.05], "warmup": ["none", "critical"]},
    "budget": {"steps": 6, "batch_size": 32, "log_every": 2, "eval_every": 3},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """openwandb serving on 127.0.0.1 (installed from the pinned requirements, no dependency resolved
    beyond them), and a HOME logged in to it."""
    root = tmp_path_factory.mktemp("wandb-server")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "-r", str(REQUIREMENTS)],
                         capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        pytest.fail(f"could not install the W&B-protocol server: {pip.stderr[-2000:]}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([str(venv / "bin" / "openwandb"), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(root / "data")], stdout=log, stderr=subprocess.STDOUT)
    try:  # the server is stopped however the set-up or the tests end
        deadline = time.time() + 90
        while True:
            try:
                _get(url, "/api/v2/projects")
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"the W&B-protocol server did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        home = root / "home"
        home.mkdir()
        env = _env(home)
        login = subprocess.run([WANDB, "login", "--host", url, KEY], capture_output=True, text=True, env=env,
                               timeout=120)
        assert login.returncode == 0, login.stderr
        assert f"machine 127.0.0.1:{port}" in (home / ".netrc").read_text()  # what a user has: netrc + settings
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k not in ("NETRC",)}
    return {**env, "HOME": str(home), "COLUMNS": "200", "NO_COLOR": "1"}


def _get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=10) as r:  # (127.0.0.1 only)
        return json.loads(r.read())


def _runs(url: str, project: str) -> dict[str, dict]:
    return {r["run_id"]: r for r in _get(url, f"/api/v2/projects/default/{project}/runs?limit=1000")["runs"]}


def _study(tmp_path: Path, project: str, mode: str) -> Path:
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "output_dir": str(tmp_path / "runs"),
                                    "tracking": {"wandb": mode, "project": project}}))
    return spec


def _check_arrived(url: str, project: str, study: Path) -> None:
    """Every trial's run on the server, with its config, tags, summary and history as the study folder
    holds them; the study-summary run beside them."""
    from elrbench.store import StudyStore

    store = StudyStore.open(study)
    results = store.results()
    runs = _runs(url, project)
    assert len(results) == 4
    for r in results:
        run = runs[store.run_id(r.trial_id)]
        assert run["state"] == "finished"
        config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in run["config"].items()}
        assert config["trial_id"] == r.trial_id and config["depth"] == r.depth
        assert config["study_id"] == store.meta()["study_id"]
        assert config["warmup_label"] == r.warmup
        assert {f"depth={r.depth}", f"warmup={r.warmup}", "optimizer=sgd", "lr=0.05"} <= set(run["tags"])
        assert run["summary"]["outcome"] == r.outcome and run["summary"]["trained"] == float(r.outcome == "trained")
        assert run["summary"]["final_test_acc"] == pytest.approx(r.final_test_acc)
        metrics = _get(url, f"/api/v2/runs/{run['run_id']}/metrics?key=train_loss")["metrics"]
        hist = [h for h in store.history(r.trial_id) if "train_loss" in h]
        assert [m["step"] for m in metrics] == [h["step"] for h in hist]
        assert [m["value"] for m in metrics] == pytest.approx([h["train_loss"] for h in hist])
        keys = set(_get(url, f"/api/v2/runs/{run['run_id']}/metrics")["keys"])
        assert {"elr_spread", "lr", "test_acc"} <= keys
    assert store.run_id(f"report-{store.meta()['study_id'].rsplit('-', 1)[-1]}") in runs  # the summary run


def test_an_online_study_arrives_on_a_w_and_b_server_with_only_wandb_login(server, tmp_path):
    url, env = server
    spec = _study(tmp_path, "online-itest", "online")
    r = subprocess.run([EXE, "submit", str(spec), "--executor", "inline"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (study,) = (tmp_path / "runs").iterdir()
    _check_arrived(url, "online-itest", study)


def test_offline_runs_synced_with_wandb_sync_arrive_and_do_not_merge_with_another_folders(server, tmp_path):
    url, env = server
    spec = _study(tmp_path, "sync-itest", "offline")
    r = subprocess.run([EXE, "submit", str(spec), "--executor", "inline"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (study,) = (tmp_path / "runs").iterdir()
    assert _runs(url, "sync-itest") == {}  # offline: nothing uploaded yet
    runs = sorted(str(p) for p in (study / "wandb").glob("offline-run-*"))
    sync = subprocess.run([WANDB, "sync", *runs], capture_output=True, text=True, env=env, timeout=600)
    assert sync.returncode == 0, sync.stderr[-3000:]
    _check_arrived(url, "sync-itest", study)
    # the same spec run again in another folder, synced into the same project: distinct runs, none merged
    other = tmp_path / "again"
    other.mkdir()
    spec2 = _study(other, "sync-itest", "offline")
    r = subprocess.run([EXE, "submit", str(spec2), "--executor", "inline"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (study2,) = (other / "runs").iterdir()
    runs2 = sorted(str(p) for p in (study2 / "wandb").glob("offline-run-*"))
    assert subprocess.run([WANDB, "sync", *runs2], capture_output=True, text=True, env=env,
                          timeout=600).returncode == 0
    assert len(_runs(url, "sync-itest")) == 2 * 5  # 4 trials and a summary run per folder
    _check_arrived(url, "sync-itest", study)  # the first folder's runs unchanged

"""Damaged and hostile study folders, and extreme but valid spec values (reliability round 3,
docs/reliability.md): every case ends in one clear line and exit 2, or in a report that names what
it left out; no file outside the study folder is changed, nothing hangs."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import BASE, cli

TINY = {**BASE, "name": "dmg",
        "workloads": [{"name": "mlp", "model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5}],
        "grid": {"depth": [2, 4], "lr": [0.05], "warmup": ["none", {"name": "linear", "steps": 2}]},
        "budget": {"steps": 6, "batch_size": 32, "log_every": 2, "eval_every": 3},
        "tracking": {"wandb": "offline"}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-trial study (W&B offline), made once; each test damages its own copy."""
    root = tmp_path_factory.mktemp("finished")
    spec = root / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "output_dir": str(root / "runs")}))
    r = cli("submit", str(spec), "--executor", "inline", "--no-report")
    assert r.returncode == 0, r.stderr
    (study,) = (root / "runs").iterdir()
    return study


@pytest.fixture
def study(finished, tmp_path) -> Path:
    copy = tmp_path / "study"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def _trial(study: Path) -> Path:
    return sorted((study / "trials").iterdir())[0]


def _refused(r, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-400:], r.stderr[-800:])
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


# ---------------------------------------------------------------- links planted in a study folder
def test_a_linked_lock_is_refused_and_its_target_kept(study, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    (study / ".lock").unlink(missing_ok=True)
    (study / ".lock").symlink_to(victim)
    _refused(cli("resume", str(study), "--executor", "inline"), ".lock", "symbolic link")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("where", ["checkpoints", "trials", "report", "figure"])
def test_a_linked_folder_or_figure_is_refused_and_nothing_outside_changes(study, tmp_path, where):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "step_000000002.pt").write_text("keep me")
    if where == "checkpoints":
        t = _trial(study)
        (t / "result.json").unlink()  # the trial reruns, and would use its checkpoints folder
        shutil.rmtree(t / "checkpoints", ignore_errors=True)
        (t / "checkpoints").symlink_to(outside)
        link = t / "checkpoints"
    elif where == "trials":
        shutil.copytree(study / "trials", outside / "trials")
        shutil.rmtree(study / "trials")
        (study / "trials").symlink_to(outside / "trials")
        link = study / "trials"
    elif where == "report":
        (study / "report").symlink_to(outside)
        link = study / "report"
    else:
        figures = study / "report" / "figures"
        figures.mkdir(parents=True)
        (figures / "accuracy-mlp-lr-0.05-sgd-constant.png").symlink_to(outside / "step_000000002.pt")
        link = figures / "accuracy-mlp-lr-0.05-sgd-constant.png"
    before = sorted(p.name for p in outside.rglob("*"))
    if where == "checkpoints":  # the report writes nothing in a trial's folder: it goes ahead
        assert cli("report", str(study), "--no-wandb").returncode == 0
    else:
        _refused(cli("report", str(study), "--no-wandb"), str(link), "symbolic link")
    _refused(cli("resume", str(study), "--executor", "inline"), str(link), "symbolic link")
    assert sorted(p.name for p in outside.rglob("*")) == before
    assert (outside / "step_000000002.pt").read_text() == "keep me"


def test_report_from_wandb_refuses_a_file_or_link_where_its_folder_goes(study, tmp_path):
    w = study / "wandb"
    (w / "report").write_text("mine")
    _refused(cli("report", "--from-wandb", str(w), "--no-wandb"), "is a file")
    (w / "report").unlink()
    (w / "report").symlink_to(tmp_path)
    _refused(cli("report", "--from-wandb", str(w), "--no-wandb"), "is a link")
    assert (w / "report").is_symlink() and not (tmp_path / "report.html").exists()


# ---------------------------------------------------------------- damaged files
@pytest.mark.parametrize("content", [b"[1, 2]", b"null", b"{}", b"\xff\xfe garbage",
                                     b'{"study_id": 5, "spec_hash": "x", "n_trials": "many"}', b'{"n_trials": NaN}'])
def test_a_damaged_study_json_is_named(study, content):
    (study / "study.json").write_bytes(content)
    for cmd in ("status", "report"):
        _refused(cli(cmd, str(study)), "study.json is damaged")
    _refused(cli("resume", str(study), "--executor", "inline"), "study.json is damaged")


def test_a_garbage_spec_yaml_is_named_and_the_report_still_made(study):
    """The report needs only the results; the W&B summary run needs the spec's tracking section and is
    skipped with a warning that names the file."""
    (study / "spec.yaml").write_bytes(b"\xff\xfe\x00garbage")
    r = cli("report", str(study))
    assert r.returncode == 0 and (study / "report" / "report.html").is_file(), r.stderr
    assert "spec.yaml: not a UTF-8 text file" in r.stderr and "Traceback" not in r.stderr
    _refused(cli("resume", str(study), "--executor", "inline"), "spec.yaml", "not a UTF-8 text file")


@pytest.mark.parametrize("which", ["trials.csv", "result.json"])
def test_a_folder_where_a_file_belongs_is_named(study, which):
    path = study / which if which == "trials.csv" else _trial(study) / which
    path.unlink()
    path.mkdir()
    if which == "trials.csv":
        _refused(cli("report", str(study), "--no-wandb"), str(path), "is a folder")
    else:  # the report writes nothing in a trial's folder: it leaves the trial out and names it
        r = cli("report", str(study), "--no-wandb")
        assert r.returncode == 0, r.stderr
        assert f"Damaged, left out: trials/{path.parent.name}/result.json: not a regular file" in r.stdout
    _refused(cli("resume", str(study), "--executor", "inline"), str(path), "is a folder")


@pytest.mark.parametrize("depth", [0, -3, 10**30])
def test_a_result_of_impossible_depth_is_left_out_and_named(study, depth):
    path = _trial(study) / "result.json"
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "depth": depth}))
    r = cli("report", str(study), "--no-wandb")
    assert r.returncode == 0, r.stderr
    assert f"Damaged, left out: trials/{path.parent.name}/result.json" in r.stdout
    assert "3 trials" in r.stdout or "3/" in r.stdout


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_result_that_is_no_regular_file_neither_hangs_nor_exhausts_status(study, kind):
    path = _trial(study) / "result.json"
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
    r = cli("status", str(study))  # the runner's timeout (300 s) would fail a hang
    assert r.returncode == 0, r.stderr
    assert f"damaged trials/{path.parent.name}/result.json" in r.stdout
    assert ("not a regular file" if kind == "fifo" else "symbolic link") in r.stdout


def test_stray_entries_in_trials_are_left_alone_and_escape_codes_never_reach_the_terminal(study):
    (study / "trials" / "my notes").mkdir()
    evil = study / "trials" / "x\x1b[31mRED"
    evil.mkdir()
    (evil / "result.json").write_text("{")
    r = cli("status", str(study))
    assert r.returncode == 0, r.stderr
    assert "trials/my notes: not a trial's folder; left alone" in r.stdout
    assert "4/4 trials have a result" in r.stdout
    rep = cli("report", str(study), "--no-wandb")
    assert rep.returncode == 0, rep.stderr
    for out in (r.stdout, rep.stdout, r.stderr, rep.stderr):
        assert "\x1b" not in out
    assert "x\\x1b[31mRED" in rep.stdout and "x\\x1b[31mRED" in r.stdout


# ---------------------------------------------------------------- extreme but valid values
def test_every_trial_diverged_still_gives_a_report_and_a_safe_trial_id(tmp_path):
    """lr 1e20 diverges every trial (and its id must not hold the '+' of 1e+20); the report is what
    the user needs most then, and exists."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "runs"), "tracking": {"wandb": "disabled"},
                                    "grid": {**TINY["grid"], "lr": [1e20]}}))
    r = cli("submit", str(spec), "--executor", "inline")
    assert r.returncode == 0, r.stderr[-2000:]
    (study,) = (tmp_path / "runs").iterdir()
    assert (study / "report" / "report.html").is_file()
    ids = [p.name for p in (study / "trials").iterdir()]
    assert all("lr1e20" in i for i in ids), ids
    assert {json.loads((study / "trials" / i / "result.json").read_text())["outcome"] for i in ids} == {"diverged"}


def test_a_subnormal_lr_runs_and_reports(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "runs"), "tracking": {"wandb": "disabled"},
                                    "grid": {**TINY["grid"], "depth": [2], "lr": [5e-324]}}))
    r = cli("submit", str(spec), "--executor", "inline")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "run at depth 2 only" in r.stdout  # (it said 'depth 0')


@pytest.mark.parametrize("override, words", [
    ("grid.seed=[18446744073709551616]", "below 2^64"),
    ("grid.lr=[1e308]", "overflows float32"),
    ("budget.steps=1000000000000000000", "ELRBENCH_MAX_STEPS"),
    ("budget={epochs: 1e300}", "ELRBENCH_MAX_STEPS"),
    ("budget.steps=" + "7" * 5001, "thousands of digits"),
])
def test_extreme_values_are_refused_at_validation(tmp_path, override, words):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "runs")}))
    _refused(cli("validate", str(spec), override), words)


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
def test_a_5001_digit_number_in_a_spec_file_is_one_line(tmp_path, suffix):
    big = "7" * 5001
    text = {".yaml": f"name: x\nseed: {big}\n", ".json": f'{{"name": "x", "seed": {big}}}',
            ".toml": f'name = "x"\nseed = {big}\n'}[suffix]
    path = tmp_path / f"s{suffix}"
    path.write_text(text)
    _refused(cli("validate", str(path)), path.name, "thousands of digits")


def test_a_huge_nesting_limit_is_refused_and_a_deep_spec_fails_fast(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nfoo: " + "[" * 100_000 + "]" * 100_000 + "\n")
    r = cli("validate", str(path))
    _refused(r, "nested more than 32 levels")
    env_run = __import__("subprocess").run
    from tests.conftest import EXE
    r = env_run([EXE, "validate", str(path)], capture_output=True, text=True, timeout=120,
                env=dict(os.environ, ELRBENCH_MAX_NESTING="1000000"))
    _refused(r, "ELRBENCH_MAX_NESTING=1000000: at most 200")


# ---------------------------------------------------------------- --address
def _listener(reply: bytes | None):
    """A TCP server on 127.0.0.1 that accepts and then says nothing (reply None) or sends `reply`."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            held.append(c)
            if reply is not None:
                c.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_an_address_that_is_no_ray_cluster_is_refused_within_seconds(tmp_path):
    import socket

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "runs")}))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    silent, http = _listener(None), _listener(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    cases = {f"127.0.0.1:{port}": "nothing listens there", "127.0.0.1:0": "port from 1 to 65535",
             "127.0.0.1:-1": "port from 1 to 65535", "127.0.0.1:99999": "port from 1 to 65535",
             f"127.0.0.1:{silent.getsockname()[1]}": "no answer within 5 s",
             f"ray://127.0.0.1:{http.getsockname()[1]}": "not a Ray cluster"}
    for address, words in cases.items():
        _refused(cli("submit", str(spec), "--address", address), f"--address {address}", words)
    assert not (tmp_path / "runs").exists()  # nothing started, no study folder made
    silent.close()
    http.close()


def test_sigterm_stops_a_driver_stuck_joining_a_cluster(tmp_path):
    """ray.init on an address that accepts and never answers holds the main thread in C++; SIGTERM must
    still end the process, with one line (the CLI's own check refuses such an address first, so the
    driver is entered here directly)."""
    import signal
    import subprocess
    import sys
    import time

    silent = _listener(None)
    code = ("import sys; from elrbench.executors.ray import ray_cluster\n"
            "with ray_cluster(sys.argv[1]): print('connected')\n")
    p = subprocess.Popen([sys.executable, "-c", code, f"127.0.0.1:{silent.getsockname()[1]}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # inside ray.init by now (it prints its first retry after 5 s)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err[-1000:])
    assert "stopped (SIGTERM) while waiting for --address" in err and "connected" not in out
    silent.close()


def test_a_dead_worker_is_one_line_not_rays_traceback():
    import logging

    from elrbench.executors.ray import _OneLineTaskFailures

    try:
        raise RuntimeError("The actor died unexpectedly before finishing this task.\n\tclass_name: ImplicitFunc")
    except RuntimeError:
        record = logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, __file__, 1,
                                   "Trial task failed for trial %s", ("_trainable_1",), __import__("sys").exc_info())
    assert _OneLineTaskFailures(2).filter(record)
    text = logging.Formatter().format(record)
    assert text.count("\n") == 0 and "Traceback" not in text
    assert "RuntimeError: The actor died unexpectedly" in text and "max_failures: 2" in text


def test_status_names_where_an_unfinished_trial_resumes(study):
    """A trial without a result is listed with its newest checkpoint's step (what `resume` picks up),
    or as having none: a trial killed between its checkpoint's rename and its logs' write, or before
    its first checkpoint, is still named."""
    first, second = sorted((study / "trials").iterdir())[:2]
    for t in (first, second):
        (t / "result.json").unlink()
    (first / "checkpoints").mkdir(exist_ok=True)
    for name in ("step_000000002.pt", "step_000000004.pt", "step_x.pt", "step_000000006.pt.tmp"):
        (first / "checkpoints" / name).write_bytes(b"")
    (first / "history.jsonl").unlink()
    r = cli("status", str(study))
    assert r.returncode == 0, r.stderr
    assert f"running or interrupted {first.name}: checkpoint at step 4\n" in r.stdout, r.stdout
    assert f"running or interrupted {second.name}: no checkpoint yet\n" in r.stdout, r.stdout
    assert "2/4 trials have a result" in r.stdout

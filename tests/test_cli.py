"""The CLI as a user meets it: the installed `elrbench` command in a subprocess."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXE, ROOT
from tests.conftest import cli as run


@pytest.fixture
def spec_file(tmp_path, base_spec) -> Path:
    base_spec["grid"]["depth"] = [2, 3]
    base_spec["budget"]["steps"] = 8
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    return path


def test_validate_ok(spec_file):
    r = run("validate", str(spec_file))
    assert r.returncode == 0, r.stderr
    assert "2 trials" in r.stdout


def test_validate_reports_every_problem_one_line_each(spec_file):
    r = run("validate", str(spec_file), "workloads.0.threshold=3", "grid.lr=[-1]", "budget.bogus=1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3, r.stderr
    assert any("workloads.0.threshold:" in line for line in lines)
    assert any("grid.lr:" in line for line in lines)
    assert any("budget.bogus: unknown field" in line for line in lines)
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("content,needle", [
    ("name: [x\n", "YAML error"),
    ("!!python/object/apply:os.system ['touch /tmp/elrbench-pwned']\n", "YAML error"),
])
def test_bad_files_exit_2_without_traceback(tmp_path, content, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    for cmd in ("validate", "show", "submit"):
        r = run(cmd, str(bad))
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not Path("/tmp/elrbench-pwned").exists()


def test_missing_file_and_debug_traceback(tmp_path):
    r = run("validate", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "spec file not found" in r.stderr and "Traceback" not in r.stderr
    r = run("--debug", "validate", str(tmp_path / "nope.yaml"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_show_lists_the_grid(spec_file):
    r = run("show", str(spec_file))
    assert r.returncode == 0, r.stderr
    assert "2 trials" in r.stdout and "schema_version: 1" in r.stdout
    assert r.stdout.count("plain_cnn-digits-d") == 2


def test_show_and_validate_of_a_million_trials_never_expand_the_grid(tmp_path, base_spec):
    base_spec["grid"] = {"depth": list(range(2, 12)), "lr": [0.01 * (i + 1) for i in range(10)],
                         "warmup": ["none", "critical"], "seed": list(range(5000))}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(base_spec))
    env = {"ELRBENCH_MAX_TRIALS": "2000000"}
    r = run("validate", str(path), env=env)
    assert r.returncode == 0 and "1000000 trials" in r.stdout, r.stderr
    r = run("show", str(path), "--grid", env=env)
    assert r.returncode == 0, r.stderr
    assert "1000000 trials" in r.stdout and "... 999960 more (--rows 0 lists every trial)" in r.stdout
    assert r.stdout.count("plain_cnn-digits-d") == 40 and "-s4999-" in r.stdout and "-s0-" in r.stdout
    r = run("show", str(path), "--grid", "--rows", "3", env=env)
    assert r.stdout.count("plain_cnn-digits-d") == 3 and "... 999997 more" in r.stdout


def test_submit_status_train(spec_file, tmp_path):
    r = run("submit", str(spec_file), "--executor", "inline")
    assert r.returncode == 0, r.stderr
    assert "trainability by depth" in r.stdout
    assert "[1/2] plain_cnn-digits-d2-" in r.stdout and "[2/2] plain_cnn-digits-d3-" in r.stdout  # progress in logs
    folder = Path(r.stdout.strip().splitlines()[-1].split("study folder:")[1].strip())
    assert (folder / "study.json").is_file()
    rows = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    assert len(rows) == 2 and all(row["outcome"] in ("trained", "untrained") for row in rows)
    # a second submit skips the finished trials
    r2 = run("submit", str(spec_file), "--executor", "inline")
    assert r2.returncode == 0 and "(2 already finished)" in r2.stdout

    st = run("status", str(folder))
    assert st.returncode == 0 and "2/2 trials have a result" in st.stdout
    # the by-depth table fits an 80-column terminal, each cell's lines whole (trained [Wilson], accuracy)
    narrow = run("status", str(folder), columns=80)
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert re.search(r"│\s+[01]/1 \[[01]\.\d\d, [01]\.\d\d\] │", narrow.stdout), narrow.stdout

    ids = [row["trial_id"] for row in rows]
    tr = run("train", str(spec_file), "--trial", ids[0])
    assert tr.returncode == 0, tr.stderr
    assert "outcome:" in tr.stdout and "step 8/8" in tr.stdout
    assert len(list(folder.glob("trials/*/result.json"))) == 2  # no duplicate row

    missing = run("train", str(spec_file), "--trial", "nope")
    assert missing.returncode == 2 and "matches no trial" in missing.stderr


def test_status_of_a_non_study(tmp_path):
    r = run("status", str(tmp_path))
    assert r.returncode == 2 and "not a study folder" in r.stderr


def test_submit_refuses_what_inline_cannot_run(spec_file):
    r = run("submit", str(spec_file), "resources.workers_per_trial=2", "--executor", "inline")
    assert r.returncode == 2 and "DDP trials need --executor ray" in r.stderr
    r = run("submit", str(spec_file), "resources.workers_per_trial=3")  # 64 examples do not split in 3
    assert r.returncode == 2 and "budget.batch_size" in r.stderr
    r = run("submit", str(spec_file), "budget.batch_size=100000")
    assert r.returncode == 2 and "batch_size" in r.stderr
    assert not list(Path(spec_file.parent / "runs").glob("*/study.json"))  # nothing started


def test_smoke_study_runs(tmp_path):
    r = run("submit", str(ROOT / "studies" / "ci" / "smoke.yaml"), f"output_dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "6 trials" in r.stdout
    assert len(list(tmp_path.glob("*/trials/*/result.json"))) == 6


def test_theory_commands(tmp_path, spec_file):
    r = run("theory", "check", str(spec_file), "--depth", "3")
    assert r.returncode == 0, r.stderr
    assert "depth 3: 2 scale-invariant tensors, 0 failed" in r.stdout  # plain_cnn depth 3: 2 convolutions
    r = run("theory", "check", str(spec_file), "workloads.0.norm=none")
    assert r.returncode == 2 and "no weight followed directly by a normalization" in r.stderr
    r = run("theory", "critical-lr", str(spec_file), "--trial", "1")
    assert r.returncode == 0, r.stderr
    assert "eta_crit = 1/sqrt(c_max c_min) =" in r.stdout and "gradient explosion" in r.stdout
    png = tmp_path / "sim.png"
    r = run("theory", "simulate", "--layers", "20", "--steps", "30", "--warmup", "critical", "--png", str(png))
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run("theory", "simulate", "--optimizer", "lion")
    assert r.returncode == 2 and "--optimizer" in r.stderr and "unknown optimizer 'lion'" in r.stderr
    # any registered warm-up, with options written as in a spec
    r = run("theory", "simulate", "--layers", "8", "--steps", "12", "--warmup", "{name: linear, steps: 4}")
    assert r.returncode == 0, r.stderr
    assert "warm-up linear(steps=4)" in r.stdout.replace("\n", "")
    r = run("theory", "simulate", "--steps", "12", "--warmup", "he_classic")
    assert r.returncode == 2 and "--trains-at" in r.stderr
    r = run("theory", "simulate", "--steps", "12", "--warmup", "he_classic", "--trains-at", "5",
            "--optimizer", "sgdm", "--momentum", "0.5")
    assert r.returncode == 0, r.stderr
    r = run("theory", "simulate", "--warmup", "{name: linear, steps: 0}")
    assert r.returncode == 2 and "steps" in r.stderr
    r = run("theory", "forecast", str(spec_file), "grid.warmup=[none,constrained]")
    assert r.returncode == 0, r.stderr
    assert "predicted ELR spread" in r.stdout and r.stdout.count("constrained") >= 2  # one arm per depth
    r = run("theory", "forecast", str(spec_file), "grid.warmup=[nope]")
    assert r.returncode == 2 and "nope" in r.stderr


def test_submit_runs_on_an_embedded_ray_cluster_by_default(spec_file):
    r = run("submit", str(spec_file))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on an embedded Ray cluster on 127.0.0.1" in r.stdout and "2 trials: " in r.stdout
    assert r.stderr == "", r.stderr  # no library's warnings or notices in a normal command's output
    folder = Path(r.stdout.strip().splitlines()[-1].split("study folder:")[1].strip())
    rows = [json.loads(p.read_text()) for p in folder.glob("trials/*/result.json")]
    assert len(rows) == 2 and all(row["outcome"] in ("trained", "untrained") for row in rows)
    bad = run("submit", str(spec_file), "--executor", "dask")
    assert bad.returncode == 2 and "--executor" in bad.stderr


def test_resume_finishes_a_study_whose_driver_was_killed(tmp_path, base_spec):
    base_spec["grid"].update(depth=[6], seed=[0, 1, 2])
    base_spec["budget"].update(steps=150, log_every=10, checkpoint_every=20)
    base_spec["resources"] = {"cpus_per_worker": 1, "max_concurrent_trials": 1}
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(base_spec))
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    driver = subprocess.Popen([EXE, "submit", str(spec)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              env=env, start_new_session=True)
    runs = tmp_path / "runs"
    deadline = time.time() + 240
    first = None
    while time.time() < deadline and driver.poll() is None:
        done = list(runs.glob("*/trials/*/result.json"))
        # a finished trial keeps its checkpoints for a moment after its result: only another's count
        mid = [p for p in runs.glob("*/trials/*/checkpoints/step_*.pt")
               if not (p.parent.parent / "result.json").exists()]
        if done and mid:  # one trial finished, another in the middle: kill the driver and its cluster
            first = (done[0], done[0].read_bytes())
            os.killpg(driver.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    driver.wait(60)
    assert first, "the driver was not killed mid-study: " + driver.stdout.read().decode()[-2000:]
    (folder,) = runs.iterdir()
    assert len(list(folder.glob("trials/*/result.json"))) < 3
    st = run("status", str(folder))
    assert st.returncode == 0 and "pid " in st.stdout
    assert re.search(r"running or interrupted \S+: checkpoint at step (20|40|60|80|100|120|140) ", st.stdout), st.stdout

    r = run("resume", str(folder))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "already finished" in r.stdout
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("trials/*/result.json"))]
    assert len(rows) == 3 and all(row["outcome"] in ("trained", "untrained") for row in rows)
    assert first[0].read_bytes() == first[1]  # the finished trial was not rerun
    table = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(table) == 4  # header + one row per trial, no duplicate
    from elrbench.spec import load_spec
    from elrbench.train import run_trial

    by_id = {t.trial_id: t for t in load_spec(spec).expand()}
    for row in rows:  # each, interrupted or not, equals an uninterrupted run
        assert row["final_train_loss"] == run_trial(by_id[row["trial_id"]]).final_train_loss
    bad = run("resume", str(tmp_path))
    assert bad.returncode == 2 and "not a study folder" in bad.stderr

"""Careless and hostile input: nothing written or read outside the study folder, bounded spec files
and grids, one writer per study folder, checkpoints and store files that survive damage, paths
given every way a user types them. docs/reliability.md lists each case with its test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from elrbench.errors import SpecError, StoreError
from elrbench.result import TrialResult
from elrbench.spec import check_machine, load_spec, validate_spec
from elrbench.store import StudyStore
from elrbench.train import Checkpoints, run_trial
from tests.conftest import EXE, Died, cli, stop_at


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _problems(e: SpecError) -> str:
    return "\n".join(f"{loc}: {msg}" for loc, msg in e.value.problems)


# ---------------------------------------------------------------- names that become paths
def test_names_that_become_paths_are_safe(base_spec, tmp_path):
    base_spec["workloads"][0]["name"] = "../../../../tmp/x"
    with pytest.raises(SpecError) as e:
        validate_spec(base_spec)
    assert "workloads.0.name" in _problems(e)
    store = StudyStore.create(validate_spec(dict(base_spec, workloads=[{**base_spec["workloads"][0], "name": "ok"}])))
    for bad in ("../x", "..", "a/b", "", "x\x00"):
        with pytest.raises(StoreError, match="is not a trial id"):
            store.trial_dir(bad)


def test_a_crafted_result_cannot_point_outside_the_study(base_spec, tmp_path):
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "history.jsonl").write_text('{"step": 1, "secret": 1}\n')
    folder = store.root / "trials" / "t1"
    folder.mkdir(parents=True)
    row = TrialResult.failed(s.expand()[0], "x").record() | {"trial_id": "../../../outside"}
    (folder / "result.json").write_text(json.dumps(row))
    assert store.results() == [] and "its trial_id" in store.damaged["trials/t1/result.json"]
    r = cli("report", str(store.root))
    assert r.returncode == 2 and "no trial has a result" in r.stderr  # nothing read from outside


# ---------------------------------------------------------------- spec files
BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("text,message", [
    (BOMB, "aliases are expanded"),
    ("name: &a [1, *a]\n", "recursive alias"),
    ("[" * 100_000 + "]" * 100_000, "nested more than"),
    ("name: a\nname: b\n", "the key 'name' is given twice"),
    ("name: x\ngrid: {lr: [0.1], lr: [0.2]}\n", "the key 'lr' is given twice"),
])
def test_hostile_yaml_is_refused_in_one_line(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert message in _problems(e) and len(e.value.problems) == 1
    r = cli("validate", str(path))
    assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_oversized_and_malformed_spec_files(tmp_path):
    big = _write(tmp_path, "# " + "x" * (2 << 20) + "\nname: big\n")
    r = cli("validate", str(big))
    assert r.returncode == 2 and "more than 1048576 for a spec" in r.stderr
    dup = _write(tmp_path, '{"name": "a", "name": "b"}', "s.json")
    with pytest.raises(SpecError, match="given twice"):
        load_spec(dup)
    deep = _write(tmp_path, "[" * 50_000 + "]" * 50_000, "d.json")
    r = cli("validate", str(deep))
    assert r.returncode == 2 and ("nested" in r.stderr or "JSON error" in r.stderr) and "Traceback" not in r.stderr
    r = cli("validate", str(tmp_path))  # a folder, not a file
    assert r.returncode == 2 and "not a file" in r.stderr


def test_overrides_are_bounded_too(base_spec, tmp_path):
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    r = cli("validate", str(path), "grid.seed=" + "[" * 10_000 + "]" * 10_000)
    assert r.returncode == 2 and "nested more than" in r.stderr
    r = cli("validate", str(path), "grid.depth.-1=3")
    assert r.returncode == 2 and "no such place" in r.stderr


# ---------------------------------------------------------------- limits, checked before anything is allocated
def test_grids_and_data_are_bounded(base_spec, monkeypatch, tmp_path):
    big = dict(base_spec, grid={"depth": list(range(2, 102)), "lr": [0.1 * (i + 1) for i in range(100)],
                                "seed": list(range(10_001))})
    with pytest.raises(SpecError) as e:
        validate_spec(big)  # 10^8 trials: counted, never expanded
    assert "100010000 trials" in _problems(e) and "ELRBENCH_MAX_TRIALS" in _problems(e)
    monkeypatch.setenv("ELRBENCH_MAX_TRIALS", "200000000")
    with pytest.raises(SpecError) as e:  # raised: the grid passes, the depths (up to 100) are then fine
        validate_spec(big | {"grid": big["grid"] | {"depth": [10**6]}})
    assert "ELRBENCH_MAX_DEPTH" in _problems(e)
    assert validate_spec(big).n_trials == 100 * 100 * 10_001
    monkeypatch.delenv("ELRBENCH_MAX_TRIALS")
    synth = dict(base_spec, workloads=[{"model": "bn_mlp", "dataset": "synthetic", "threshold": 0.5,
                                        "data": {"n_train": 10**10, "shape": [3, 32, 32]}}])
    validated = validate_spec(synth)  # the data's size is a check against the machine, not the spec's content
    with pytest.raises(SpecError) as e:
        check_machine(validated)
    assert "workloads.0.data" in _problems(e) and "GiB of data" in _problems(e)
    r = cli("validate", str(_write(tmp_path, yaml.safe_dump(synth), "synth.yaml")))
    assert r.returncode == 2 and "GiB of data" in r.stderr
    monkeypatch.setenv("ELRBENCH_MAX_TRIALS", "lots")
    r = cli("validate", "nonexistent.yaml")
    assert r.returncode == 2 and "ELRBENCH_MAX_TRIALS='lots'" in r.stderr
    from elrbench.errors import UsageError
    from elrbench.specfile import Limits

    monkeypatch.delenv("ELRBENCH_MAX_TRIALS")
    for bad in ("\u0663", "1_000", "+5", "0", "-3", "9" * 5001, "1e3", ""):  # '\u0663' is Arabic-Indic 3
        monkeypatch.setenv("ELRBENCH_MAX_DEPTH", bad)
        with pytest.raises(UsageError, match="ELRBENCH_MAX_DEPTH=.*ASCII digits"):
            Limits.from_env()
    monkeypatch.setenv("ELRBENCH_MAX_DEPTH", " 64 ")
    assert Limits.from_env().depth == 64


# ---------------------------------------------------------------- terminal output is never markup
def test_user_text_is_printed_as_it_is(base_spec, tmp_path):
    base_spec["description"] = "[/x] [bold]not bold[/bold] [red]"
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    for cmd in ("validate", "show"):
        r = cli(cmd, str(path))
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "[/x] [bold]not bold[/bold] [red]" in cli("show", str(path)).stdout
    base_spec["grid"]["lr"] = [float("nan")]
    path = _write(tmp_path, yaml.safe_dump(base_spec).replace(".nan", ".nan"))
    r = cli("validate", str(path))
    assert r.returncode == 2 and "got [nan]" in r.stderr


# ---------------------------------------------------------------- checkpoints
def _ckpt_spec(base_spec):
    base_spec["budget"].update(steps=30, checkpoint_every=7, keep_checkpoints=2, eval_every=10)
    return validate_spec(base_spec)


def test_a_torn_newest_checkpoint_falls_back_to_the_one_before(base_spec, tmp_path, caplog):
    s = _ckpt_spec(base_spec)
    (t,) = s.expand()
    whole = run_trial(t)
    store = StudyStore.create(s)
    with pytest.raises(Died):
        run_trial(t, store, progress=stop_at(15))
    ckpts = Checkpoints(store.trial_dir(t.trial_id) / "checkpoints", 2)
    newest = ckpts.all()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # a torn write
    (newest.parent / ".step_000000021.pt.abc.tmp").write_bytes(b"left by a crash")
    with caplog.at_level("WARNING", logger="elrbench"):
        resumed = run_trial(t, store)
    assert "damaged checkpoint" in caplog.text and newest.name in caplog.text
    assert resumed.final_test_acc == whole.final_test_acc and resumed.final_train_loss == whole.final_train_loss
    assert not list(newest.parent.glob("step_*"))  # cleaned up at the end, the damaged one too


def test_no_good_checkpoint_restarts_from_scratch(base_spec, caplog):
    s = _ckpt_spec(base_spec)
    (t,) = s.expand()
    store = StudyStore.create(s)
    with pytest.raises(Died):
        run_trial(t, store, progress=stop_at(15))
    for p in Checkpoints(store.trial_dir(t.trial_id) / "checkpoints", 2).all():
        p.write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="elrbench"):
        resumed = run_trial(t, store)
    assert "starts again from step 0" in caplog.text
    assert resumed.final_test_acc == run_trial(t).final_test_acc and resumed.steps_done == 30


def test_checkpoint_files_are_whole_and_synced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    c = Checkpoints(tmp_path / "ck", keep=2)
    for step in (1, 2, 3):
        c.save(step, {"x": torch.arange(step)})
    assert [p.name for p in c.all()] == ["step_000000002.pt", "step_000000003.pt"]
    assert len(synced) >= 6  # each file and its folder
    assert not list((tmp_path / "ck").glob("*.tmp"))


# ---------------------------------------------------------------- one writer per study folder
def test_a_second_submit_is_refused_while_the_first_runs(base_spec, tmp_path):
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    store = StudyStore.create(load_spec(path))
    with store.lock("submit"):
        r = cli("submit", str(path), "--executor", "inline")
        assert r.returncode == 2 and "is in use by `elrbench submit` (pid" in r.stderr and str(os.getpid()) in r.stderr
        r = cli("resume", str(store.root), "--executor", "inline")
        assert r.returncode == 2 and "is in use by" in r.stderr
    assert not list(store.root.glob("trials/*/result.json"))  # nothing ran
    assert cli("submit", str(path), "--executor", "inline").returncode == 0  # released


def test_the_lock_of_a_dead_process_is_taken_over(base_spec, tmp_path):
    store = StudyStore.create(validate_spec(base_spec))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom elrbench.store import StudyStore\n"
        f"with StudyStore({str(store.root)!r}).lock('submit'):\n    print('held', flush=True)\n    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreError, match="is in use by"):
        with store.lock("resume"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    with store.lock("resume") as previous:
        assert previous["pid"] == holder.pid and previous["command"] == "submit"
    with store.lock("resume") as previous:  # released cleanly: nothing to take over
        assert previous is None


# ---------------------------------------------------------------- damaged store files
def test_damaged_store_files_are_named_and_the_rest_goes_on(base_spec, tmp_path):
    base_spec["grid"]["seed"] = [0, 1, 2]
    base_spec["budget"]["steps"] = 10
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    assert cli("submit", str(path), "--executor", "inline", "--no-report").returncode == 0
    store = StudyStore.open(load_spec(path).study_dir)
    t0, t1, t2 = [t.trial_id for t in load_spec(path).expand()]
    (store.trial_dir(t0) / "result.json").write_text("{")
    (store.trial_dir(t1) / "result.json").write_text(json.dumps({"trial_id": t1, "outcome": 7}))
    hist = store.trial_dir(t2) / "history.jsonl"
    hist.write_text(hist.read_text()[:-30])  # torn in the last line
    (store.trial_dir(t2) / "worker-0.json").write_text("[")
    st = cli("status", str(store.root))
    assert st.returncode == 0 and "1/3 trials have a result" in st.stdout
    assert f"damaged trials/{t0}/result.json: not JSON" in st.stdout
    assert f"damaged trials/{t1}/result.json: not a trial result" in st.stdout
    rep = cli("report", str(store.root), "--no-wandb")
    assert rep.returncode == 0 and f"trials/{t2}/history.jsonl: line" in rep.stdout
    assert f"Damaged, left out: trials/{t0}/result.json" in (store.root / "report" / "report.html").read_text()
    res = cli("resume", str(store.root), "--executor", "inline", "--no-report")
    assert res.returncode == 0 and "(1 already finished)" in res.stdout  # the damaged two ran again
    fresh = StudyStore.open(store.root)
    assert len(fresh.results()) == 3 and not any("result.json" in k for k in fresh.damaged)


def test_an_output_dir_that_is_a_file_is_refused_at_validate(base_spec, tmp_path):
    (tmp_path / "afile").write_text("x")
    base_spec["output_dir"] = str(tmp_path / "afile" / "runs")
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    for cmd in (["validate"], ["submit", "--executor", "inline"]):
        r = cli(*cmd[:1], str(path), *cmd[1:])
        assert r.returncode == 2 and "output_dir:" in r.stderr and "is a file" in r.stderr


def test_report_inputs_that_match_nothing(base_spec, tmp_path):
    base_spec["tracking"] = {"wandb": "offline", "project": "elrbench-test"}
    base_spec["budget"]["steps"] = 6
    path = _write(tmp_path, yaml.safe_dump(base_spec))
    assert cli("submit", str(path), "--executor", "inline").returncode == 0
    folder = load_spec(path).study_dir
    r = cli("report", str(folder), "--trial", "no-such-trial", "--no-wandb")
    assert r.returncode == 2 and "--trial 'no-such-trial' matches no trial" in r.stderr
    wb = folder / "wandb"
    (wb / "offline-run-20990101_000000-bad").mkdir()
    (wb / "offline-run-20990101_000000-bad" / "run-bad.wandb").write_bytes(b":W&B\xe1\xbe\x00" + b"\x01" * 500)
    (wb / "offline-run-20990101_000001-worse").mkdir()
    (wb / "offline-run-20990101_000001-worse" / "run-worse.wandb").write_bytes(b"garbage")
    r = cli("report", "--from-wandb", str(wb), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    assert "run-worse.wandb: not a readable W&B run file" in r.stdout


# ---------------------------------------------------------------- paths as users type them
def test_relative_home_and_symlinked_paths(base_spec, tmp_path):
    work, other = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    other.mkdir()
    base_spec["output_dir"] = "runs"
    base_spec["grid"]["seed"] = [0, 1]
    base_spec["budget"].update(steps=40, checkpoint_every=10)
    (work / "s.yaml").write_text(yaml.safe_dump(base_spec))
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", HOME=str(tmp_path))

    def run(*args, cwd):
        return subprocess.run([EXE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)

    # a submit killed after its first trial, as a user would interrupt it
    driver = subprocess.Popen([EXE, "submit", "s.yaml", "--executor", "inline"], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("runs/*/trials/*/result.json")):
        time.sleep(0.05)
    driver.kill()
    driver.wait(30)
    (folder,) = (work / "runs").iterdir()
    rel = os.path.relpath(folder, other)
    r = run("resume", rel, "--executor", "inline", "--no-report", cwd=other)  # relative, from elsewhere
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list(folder.glob("trials/*/result.json"))) == 2
    (tmp_path / "link").symlink_to(folder)
    for args in (["status", "~/work/runs/" + folder.name], ["status", "../link"],
                 ["report", "../link", "--no-wandb"], ["resume", "~/link", "--executor", "inline", "--no-report"]):
        r = run(*args, cwd=other)
        assert r.returncode == 0, (args, r.stderr[-2000:])
    r = run("validate", "~/work/s.yaml", cwd=other)
    assert r.returncode == 0, r.stderr


def test_a_checkpoint_of_wrong_types_is_set_aside(base_spec, caplog):
    """A checkpoint that loads but holds a string where the history belongs is damaged: renamed
    *.damaged and the one before used, not a failure on every resume."""
    s = _ckpt_spec(base_spec)
    (t,) = s.expand()
    store = StudyStore.create(s)
    with pytest.raises(Died):
        run_trial(t, store, progress=stop_at(15))
    ckpts = Checkpoints(store.trial_dir(t.trial_id) / "checkpoints", 2)
    newest = ckpts.all()[-1]
    state = torch.load(newest, weights_only=True)
    state["history"] = "not a list"
    torch.save(state, newest)
    with caplog.at_level("WARNING", logger="elrbench"), pytest.raises(Died):
        run_trial(t, store, progress=stop_at(25))
    assert "damaged checkpoint" in caplog.text and "'history' is str, not list" in caplog.text
    assert newest.with_name(newest.name + ".damaged").exists()
    resumed = run_trial(t, store)
    assert resumed.outcome != "failed" and resumed.steps_done == 30


def test_checkpoints_are_found_by_their_step_and_strays_are_not_checkpoints(tmp_path):
    """A trial's checkpoints come in step order (step_10 after step_9); a file that is no checkpoint
    of this code (step_x.pt, one set aside as .damaged, a temporary file) is left out, not an error
    that would fail every resume."""
    for name in ("step_000000010.pt", "step_9.pt", "step_x.pt", "step_000000020.pt.damaged",
                 ".step_000000030.pt.abc.tmp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in Checkpoints(tmp_path, 2).all()] == ["step_9.pt", "step_000000010.pt"]
    assert Checkpoints(tmp_path / "none", 2).all() == []  # no folder yet

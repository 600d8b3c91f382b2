from __future__ import annotations

import json

import pytest

from elrbench.errors import StoreError
from elrbench.executors import create_executor
from elrbench.result import TrialResult
from elrbench.spec import validate_spec
from elrbench.store import StudyStore, atomic_write
from tests.conftest import Recorder


def test_atomic_write_never_leaves_a_torn_file(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    atomic_write(path, "old")

    class Boom(Exception):
        pass

    import os

    real_replace = os.replace

    def failing_replace(a, b):
        raise Boom

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(Boom):
        atomic_write(path, "new" * 1000)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_study_runs_and_rerun_does_not_duplicate(base_spec):
    base_spec["grid"].update(depth=[2, 3], seed=[0, 1])
    base_spec["budget"]["steps"] = 10
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    events = Recorder()
    rows = create_executor("inline").run(s, store, events)
    assert len(events.started) == 4 and len(rows) == 4 and events.finished == rows
    assert {r.outcome for r in rows} <= {"trained", "untrained"}
    assert {(r.trial_id, 10, 10) for r in rows} <= set(events.steps)
    table = (store.root / "trials.csv").read_text().splitlines()
    assert len(table) == 1 + 4
    # a rerun finds every trial finished and runs none
    again = Recorder()
    rows2 = create_executor("inline").run(s, StudyStore.create(s), again)
    assert again.started == [] and rows2 == rows
    assert len((store.root / "trials.csv").read_text().splitlines()) == 1 + 4
    assert StudyStore.open(store.root).meta()["n_trials"] == 4
    assert StudyStore.open(store.root).spec().spec_hash() == s.spec_hash()


def test_open_refuses_other_folders(tmp_path):
    with pytest.raises(StoreError, match="not a study folder"):
        StudyStore.open(tmp_path)


def test_create_refuses_a_folder_of_another_spec(base_spec):
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    meta = json.loads((store.root / "study.json").read_text())
    meta["spec_hash"] = "something-else"
    (store.root / "study.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="another spec"):
        StudyStore.create(s)


# A result.json as the version before the typed result wrote it (a demo trial, W&B offline).
OLD_RESULT = """{
  "trial_id": "cnn-mnist5k-d16-critical-lr0.5-s0-64c97b",
  "index": 10,
  "workload": "cnn-mnist5k",
  "depth": 16,
  "lr": 0.5,
  "optimizer": "sgd",
  "warmup": "critical",
  "schedule": "constant",
  "seed": 0,
  "outcome": "trained",
  "threshold": 0.9,
  "final_test_acc": 0.917,
  "final_test_loss": 0.2947523193359375,
  "final_train_loss": 0.21514618396759033,
  "final_train_acc": 0.9375,
  "best_test_acc": 0.917,
  "diverged_step": null,
  "steps_planned": 155,
  "steps_done": 155,
  "warmup_steps": 0,
  "spread_mean": 0.4177656300606266,
  "spread_early_mean": 0.5403159379959106,
  "spread_max": 1.7697036266326904,
  "overshoot_steps": 1,
  "dead_layers_max": 0,
  "grad_explosion_slope": -0.0749496421416581,
  "train_s": 2.822,
  "wall_s": 3.306,
  "step_ms": 18.203,
  "device": "cpu",
  "host": "vm",
  "params": 40730,
  "workers": 1,
  "error": null,
  "tracking_error": null
}"""


def test_results_of_the_previous_version_read_and_rewrite_unchanged(base_spec):
    store = StudyStore.create(validate_spec(base_spec))
    tid = "cnn-mnist5k-d16-critical-lr0.5-s0-64c97b"
    (store.trial_dir(tid)).mkdir(parents=True)
    (store.trial_dir(tid) / "result.json").write_text(OLD_RESULT)
    r = store.result(tid)
    assert r.outcome == "trained" and r.final_test_acc == 0.917 and r.ranks is None and r.diverged_step is None
    assert r.to_json() == OLD_RESULT  # the same bytes: set fields only, in the same order
    store.write_table()
    header = (store.root / "trials.csv").read_text().splitlines()[0].split(",")
    assert header == list(json.loads(OLD_RESULT))
    failed = TrialResult.failed(validate_spec(base_spec).expand()[0], "OSError: disk gone")
    assert list(failed.record()) == ["trial_id", "index", "workload", "depth", "lr", "optimizer", "warmup",
                                     "schedule", "seed", "outcome", "threshold", "host", "error"]
    assert not failed.finished and r.finished


def test_a_trial_is_synced_once_it_ends_logs_before_its_result(base_spec, monkeypatch):
    """history.jsonl and layers.jsonl are synced before result.json, and one sync of the trial's folder
    after the result makes all three renames durable; the worker note is not synced."""
    import os

    from elrbench.train import run_trial

    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    trial = s.trial(0)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    store.write_worker(trial.trial_id, 0)
    run_trial(trial, store)
    folder = str(store.trial_dir(trial.trial_id))
    # each file is synced under its temporary name, .<name>.<random>.tmp, before its rename
    names = [p if p == folder else p.removeprefix(folder + "/").rsplit(".", 2)[0] for p in synced]
    assert names == [".history.jsonl", ".layers.jsonl", ".result.json", folder], synced


@pytest.mark.parametrize("text, want", [
    ("name: x\nreport:\n  baseline: linear\nsearch:\n  kind: grid\n", "linear"),
    ("name: x\nreport:\n  # the comparison\n\n  baseline: 'elr'\n", "elr"),  # comment, blank line, at the end
    ("name: x\nreport: {baseline: gradual}\n", "gradual"),  # not block style: the whole file is read
    ("name: x\nsearch:\n  kind: grid\n", "none"),
    ("report:\n  baseline: [unclosed\n", "none"),
])
def test_the_baseline_is_read_from_the_report_section(tmp_path, text, want):
    (tmp_path / "spec.yaml").write_text(text)
    assert StudyStore(tmp_path).baseline() == want


def test_trials_csv_is_current_until_a_result_changes(base_spec):
    base_spec["grid"].update(seed=[0, 1])
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    create_executor("inline").run(s, store)
    table = store.root / "trials.csv"
    fresh = StudyStore.open(store.root)  # a report's store: it reads the results, then asks
    rows = fresh.results()
    assert fresh.table_is_current(rows)
    assert not fresh.table_is_current(rows[:1])  # a row more than there are results
    text = table.read_text()
    table.write_text(text.replace("trial_id", "id", 1))  # another format (an older elrbench)
    assert not fresh.table_is_current(rows)
    table.write_text(text)
    store.write_result(rows[0].model_copy(update={"final_test_acc": 0.5}))  # newer than the table
    again = StudyStore.open(store.root)
    rows = again.results()
    assert not again.table_is_current(rows)
    again.write_table(rows)
    assert again.table_is_current(rows)
    table.unlink()
    assert not again.table_is_current(rows)

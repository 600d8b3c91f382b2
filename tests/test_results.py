from __future__ import annotations

import json

import pytest

from elrbench.errors import StoreError
from elrbench.results import StudyStore, atomic_write
from elrbench.spec import validate_spec
from elrbench.executor import run_inline
from elrbench.report import by_depth


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
    ran = []
    rows = run_inline(s, store, on_start=lambda t, i: ran.append(t.trial_id))
    assert len(ran) == 4 and len(rows) == 4
    assert {r["outcome"] for r in rows} <= {"trained", "untrained"}
    table = (store.root / "trials.csv").read_text().splitlines()
    assert len(table) == 1 + 4
    # a rerun finds every trial finished and runs none
    ran.clear()
    rows2 = run_inline(s, StudyStore.create(s), on_start=lambda t, i: ran.append(t.trial_id))
    assert ran == [] and rows2 == rows
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


def _row(depth, warmup, seed, outcome, acc):
    return {"workload": "w", "lr": 0.1, "optimizer": "sgd", "schedule": "constant", "depth": depth,
            "warmup": warmup, "seed": seed, "outcome": outcome, "final_test_acc": acc}


def test_by_depth_table_numbers():
    rows = [_row(4, "none", 0, "trained", 0.9), _row(4, "none", 1, "untrained", 0.7),
            _row(4, "linear", 0, "trained", 0.95), _row(8, "none", 0, "diverged", None),
            _row(8, "none", 1, "untrained", 0.5), _row(8, "linear", 0, "failed", None)]
    (t,) = by_depth(rows)
    assert t.depths == [4, 8] and t.warmups == ["none", "linear"]
    c = t.cells[(4, "none")]
    assert (c.n, c.trained, c.acc_mean) == (2, 1, pytest.approx(0.8))
    assert c.acc_std == pytest.approx(0.1414213, rel=1e-5)
    assert c.trained_fraction == 0.5
    d = t.cells[(8, "none")]
    assert (d.n, d.trained, d.diverged, d.acc_mean, d.acc_std) == (2, 0, 1, 0.5, None)
    assert "div 1" in d.text()
    assert t.cells[(8, "linear")].failed == 1 and t.cells[(8, "linear")].acc_mean is None

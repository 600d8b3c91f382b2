from __future__ import annotations

import copy

import pytest
import torch

from elrbench.schedules import scheduled_lr
from elrbench.spec import ScheduleSpec, validate_spec
from elrbench.store import StudyStore
from elrbench.train import run_trial
from elrbench.warmup import create_warmup
from tests.conftest import Died, stop_at


def _trial(spec: dict, **grid):
    spec = copy.deepcopy(spec)
    spec["grid"].update(grid)
    s = validate_spec(spec)
    return s, s.expand()[0]


def test_same_seed_same_losses(base_spec):
    _, t = _trial(base_spec)
    h1, h2 = [], []
    r1 = run_trial(t, progress=lambda s, n, row: h1.append(row))
    r2 = run_trial(t, progress=lambda s, n, row: h2.append(row))
    assert [r.get("train_loss") for r in h1] == [r.get("train_loss") for r in h2]
    assert r1.final_test_acc == r2.final_test_acc
    _, other = _trial(base_spec, seed=[1])
    h3 = []
    run_trial(other, progress=lambda s, n, row: h3.append(row))
    assert [r.get("train_loss") for r in h3] != [r.get("train_loss") for r in h1]


@pytest.mark.parametrize("dataset,opts,augment,warmup,lr,compile", [
    ("digits", {}, False, {"name": "linear", "steps": 12}, 0.1, "off"),
    ("synthetic", {"shape": [3, 8, 8], "n_train": 256, "n_test": 64, "augment": True}, True,
     {"name": "linear", "steps": 12}, 0.1, "off"),
    ("digits", {}, False, {"name": "critical", "source": "update", "ema": 0.5}, 50.0, "off"),
    ("digits", {}, False, {"name": "critical", "source": "update", "ema": 0.5}, 50.0, "on"),  # resumed compiled
    ("digits", {}, False, {"name": "cap", "source": "update"}, 50.0, "off"),
])
def test_checkpoint_restart_equals_uninterrupted(base_spec, tmp_path, dataset, opts, augment, warmup, lr, compile):
    base_spec["resources"] = {"compile": compile}
    base_spec["workloads"][0].update(dataset=dataset, data=opts)
    base_spec["grid"]["optimizer"] = [{"name": "sgdm", "weight_decay": 5e-4}]
    base_spec["grid"]["warmup"] = [warmup]
    base_spec["grid"]["lr"] = [lr]
    base_spec["grid"]["schedule"] = ["cosine"]
    base_spec["budget"].update(steps=30, checkpoint_every=7, keep_checkpoints=2, eval_every=10)
    s, t = _trial(base_spec)
    assert t.workload.data["augment"] is augment

    whole = run_trial(t, StudyStore.create(validate_spec(dict(base_spec, output_dir=str(tmp_path / "a")))))
    store = StudyStore.create(validate_spec(dict(base_spec, output_dir=str(tmp_path / "b"))))
    with pytest.raises(Died):
        run_trial(t, store, progress=stop_at(15))  # rows every 5 steps: it dies after step 15
    assert store.result(t.trial_id) is None
    ckpts = sorted(p.name for p in (store.trial_dir(t.trial_id) / "checkpoints").glob("*.pt"))
    assert ckpts == ["step_000000007.pt", "step_000000014.pt"]  # only the last few are kept
    resumed = run_trial(t, store)
    for key in ("final_test_acc", "final_test_loss", "final_train_loss", "final_train_acc", "steps_done",
                "warmup_steps", "spread_mean", "spread_early_mean", "spread_max", "overshoot_steps",
                "grad_explosion_slope"):
        assert getattr(resumed, key) == getattr(whole, key), key
    assert StudyStore(tmp_path / "a" / s.study_id).layers(t.trial_id) == store.layers(t.trial_id)
    a = StudyStore(tmp_path / "a" / s.study_id).history(t.trial_id)
    b = store.history(t.trial_id)
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]
    assert strip(a) == strip(b)  # every logged row, bit for bit
    assert not list((store.trial_dir(t.trial_id) / "checkpoints").glob("*.pt"))  # cleaned up at the end


def test_huge_learning_rate_diverges(base_spec):
    base_spec["workloads"][0]["norm"] = "none"
    _, t = _trial(base_spec, lr=[1e4])
    r = run_trial(t)
    assert r.outcome == "diverged"
    assert r.final_test_acc is None
    assert 0 <= r.diverged_step < r.steps_planned
    assert r.steps_done < r.steps_planned or r.diverged_step is not None


def test_shallow_net_on_digits_trains(base_spec):
    base_spec["budget"] = {"epochs": 6, "batch_size": 64, "log_every": 10}
    _, t = _trial(base_spec)
    r = run_trial(t)
    assert r.outcome == "trained", r
    assert r.final_test_acc >= 0.9
    assert r.steps_done == r.steps_planned == 6 * (1438 // 64)


def test_history_rows(base_spec, tmp_path):
    base_spec["budget"].update(steps=20, log_every=5, eval_every=10)
    s, t = _trial(base_spec)
    store = StudyStore.create(s)
    r = run_trial(t, store)
    h = store.history(t.trial_id)
    assert [row["step"] for row in h if "train_loss" in row] == [5, 10, 15, 20]
    assert [row["step"] for row in h if "test_acc" in row] == [10, 20]
    assert all(row["grad_norm"] > 0 and row["param_norm"] > 0 for row in h if "grad_norm" in row)
    assert r.final_test_acc == h[-1]["test_acc"]


def test_linear_warmup_and_schedules():
    w = create_warmup("linear", {"steps": 4, "start": 0.0}, 100)
    assert [w.lr(t, 1.0) for t in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [w.in_warmup(t) for t in range(5)] == [True, True, True, False, False]
    assert create_warmup("none", {}, 10).lr(0, 0.3) == 0.3
    step, cosine = ScheduleSpec(name="step"), ScheduleSpec(name="cosine")
    assert scheduled_lr(ScheduleSpec(), 0.1, 77, 100) == 0.1
    assert scheduled_lr(step, 0.1, 49, 100) == 0.1
    assert scheduled_lr(step, 0.1, 50, 100) == pytest.approx(0.01)
    assert scheduled_lr(step, 0.1, 75, 100) == pytest.approx(0.001)
    assert scheduled_lr(cosine, 0.1, 0, 100) == pytest.approx(0.1)
    assert scheduled_lr(cosine, 0.1, 50, 100) == pytest.approx(0.05)
    assert scheduled_lr(ScheduleSpec(name="cosine", final_fraction=0.1), 0.1, 100, 100) == pytest.approx(0.01)


def test_learning_rate_reaches_the_optimizer(base_spec):
    base_spec["grid"]["warmup"] = [{"name": "linear", "steps": 10}]
    base_spec["budget"].update(steps=10, log_every=1)
    _, t = _trial(base_spec)
    rows = []
    run_trial(t, progress=lambda s, n, row: rows.append(row))
    assert [r["lr"] for r in rows if "lr" in r] == pytest.approx([0.1 * (i + 1) / 10 for i in range(10)])


def test_the_same_seed_gives_the_same_start_under_every_warmup(base_spec):
    # paired comparisons rest on this: a seed fixes the initialization and the data order, whatever
    # the warm-up, optimizer or schedule
    from elrbench.train import setup

    base_spec["grid"].update(warmup=["none", {"name": "linear", "steps": 5}, "critical"],
                             optimizer=["sgd", "adamw"], seed=[0, 1])
    trials = validate_spec(base_spec).expand()
    runs = {(t.warmup.name, t.optimizer.name, t.seed): setup(t) for t in trials}
    for seed in (0, 1):
        ref = runs[("none", "sgd", seed)]
        for key, run in runs.items():
            if key[2] != seed:
                continue
            for (n, a), (_, b) in zip(ref.model.state_dict().items(), run.model.state_dict().items()):
                assert torch.equal(a, b), (key, n)
            for step in (0, 1, 30, 31):  # two epochs' orders (22 steps of 64 per epoch)
                assert torch.equal(ref.batch(step)[1], run.batch(step)[1]), (key, step)
    # and another seed differs
    a, b = runs[("none", "sgd", 0)], runs[("none", "sgd", 1)]
    assert not torch.equal(a.batch(0)[1], b.batch(0)[1])
    assert not all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))

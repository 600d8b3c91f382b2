"""The science experiments run on real (small) networks and give sane numbers. They are
measurements, not claims: docs/science.md holds the full-size results."""
from __future__ import annotations

import math

import pytest

from elrbench.experiments import critical_lr_check, init_snapshot, predictivity, spread_summary
from tests.conftest import deep_noskip


def _deep_noskip(base_spec, **grid):
    return deep_noskip(base_spec, steps=10, **grid)


def test_snapshot_matches_the_trials_first_step(base_spec):
    s = _deep_noskip(base_spec)
    snap = init_snapshot(s.expand()[0])
    assert len(snap.names) == 19 and (snap.g > 0).all() and (snap.w > 0).all()
    from elrbench.store import StudyStore
    from elrbench.train import run_trial

    store = StudyStore.create(s)
    run_trial(s.expand()[0], store)
    _, rows = store.layers(s.expand()[0].trial_id)
    # the snapshot is the trial's own network and batch at step 0
    assert rows[0]["g_norm"] == pytest.approx(snap.g.tolist(), rel=1e-4)
    assert rows[0]["w_norm"] == pytest.approx(snap.w.tolist(), rel=1e-6)


def test_critical_lr_check_runs_and_is_sane(base_spec):
    s = _deep_noskip(base_spec, lr=[1.0])
    import torch

    snap = init_snapshot(s.expand()[0])
    eta = 1 / math.sqrt(float(snap.c_hat.max() * snap.c_hat.min()))
    r = critical_lr_check(s.expand()[0], eta * torch.logspace(-2, 2, 9, dtype=torch.float64))
    assert r["eta_crit"] == pytest.approx(eta, rel=1e-6)
    assert r["model_argmin"] == pytest.approx(eta, rel=1e-6)  # the grid holds eta_crit itself
    assert 1e-2 <= r["ratio"] <= 1e2 and math.isfinite(r["ratio"])
    assert len(r["measured"]) == 9 and all(math.isfinite(v) and v >= 0 for v in r["measured"])
    # the tiniest step leaves the spread about where it was; the best step shrinks it
    assert r["measured"][0] == pytest.approx(r["spread_init"], abs=0.3)
    assert r["spread_min_measured"] < r["spread_init"]


def test_warmup_spread_comparison_runs(base_spec):
    s = _deep_noskip(base_spec, lr=[5.0], optimizer=["sgd", "sgdm"],
                     warmup=["none", {"name": "linear", "steps": 10}, "critical"])
    rows = spread_summary(s)
    assert len(rows) == 6
    for r in rows:
        assert math.isfinite(r.spread_early_mean) and r.spread_max >= r.spread_mean
    crit = [r for r in rows if r.warmup == "critical"]
    assert all(r.warmup_steps >= 1 for r in crit)  # 5.0 is above eta_crit at init for this net
    # a rerun reuses the finished trials
    assert spread_summary(s) == rows


def test_predictivity_runs(base_spec):
    s = _deep_noskip(base_spec, lr=[0.05])
    r = predictivity(s, s.expand()[0])
    assert r["steps"] == 10 and len(r["rows"]) == 10 and r["layers"] == 19
    first = r["rows"][0]
    # at the first step the prediction starts from the measured state: it is exact there
    assert first["w_rel_err_median"] < 1e-5 and first["elr_log10_err_median"] < 1e-4
    assert all(math.isfinite(row["w_rel_err_median"]) for row in r["rows"])

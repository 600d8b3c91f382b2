"""The science experiments run on real (small) networks and give sane numbers. They are
measurements, not claims: docs/science.md holds the full-size results."""
from __future__ import annotations

import math

import pytest

from elrbench.experiments import critical_lr_check, forecast, init_snapshot, predictivity, spread_summary
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
    assert r.eta_crit == pytest.approx(eta, rel=1e-6)
    assert r.model_argmin == pytest.approx(eta, rel=1e-6)  # the grid holds eta_crit itself
    assert 1e-2 <= r.ratio <= 1e2 and math.isfinite(r.ratio)
    assert len(r.measured) == 9 and all(math.isfinite(v) and v >= 0 for v in r.measured)
    # the tiniest step leaves the spread about where it was; the best step shrinks it
    assert r.measured[0] == pytest.approx(r.spread_init, abs=0.3)
    assert r.spread_min_measured < r.spread_init


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
    assert r.steps == 10 and len(r.rows) == 10 and r.layers == 19
    first = r.rows[0]
    # at the first step the prediction starts from the measured state: it is exact there
    assert first.w_rel_err_median < 1e-5 and first.elr_log10_err_median < 1e-4
    assert all(math.isfinite(row.w_rel_err_median) for row in r.rows)


def test_forecast_is_the_simulation_of_each_arm_from_its_network_at_init(base_spec):
    import torch

    from elrbench.theory import simulate

    s = _deep_noskip(base_spec, lr=[1.0], seed=[0, 1],
                     warmup=["none", "constrained", {"name": "linear", "steps": 5}, "cap"])
    rows = forecast(s)
    assert [f.warmup for f in rows] == ["none", "constrained", "linear(steps=5)", "cap"]  # one per arm, not per seed
    none, constrained, linear, cap = rows
    assert all(f.steps == 10 for f in rows)
    t = s.expand()[0]
    snap = init_snapshot(t)
    tr = simulate(snap.w * snap.g, snap.w, 1.0, 10, dim=snap.dims)
    assert none.spread_mean == pytest.approx(float(tr.spread.mean()), rel=1e-9)
    assert none.spread_init == pytest.approx(float(torch.log10(snap.c_hat.max() / snap.c_hat.min())), rel=1e-6)
    assert none.lr_bound_steps == 0 and constrained.spread_mean < 1e-9
    assert linear.lr_bound_steps == 4  # factors 0.2, 0.4, 0.6, 0.8, then 1
    eta_cap = 1 / float(snap.c_hat.max())
    assert (cap.lr_bound_steps >= 1) == (eta_cap < 1.0)

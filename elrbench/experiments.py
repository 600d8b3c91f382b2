"""Experiments that test the weight-dynamics model against real training (issue: the ELR science).

Each function returns plain numbers; `elrbench theory ...` prints them and docs/science.md
records them. They are measurements: the tests check that they run and are sane, not that the
paper's claims hold.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from elrbench import elr
from elrbench.diagnostics import require
from elrbench.result import TrialResult
from elrbench.spec import StudySpec, TrialSpec
from elrbench.store import StudyStore
from elrbench.theory import one_step_spread, simulate
from elrbench.train import _seed, plan, run_trial
from elrbench.workloads import create_model, load_dataset


@dataclass
class Snapshot:
    model: torch.nn.Module
    names: list[str]
    params: list[torch.nn.Parameter]
    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor  # ||W_l||
    g: torch.Tensor  # ||g_l|| on the batch

    @property
    def c_hat(self) -> torch.Tensor:
        return elr.c_hat(self.w, self.g)


def _grads(model: torch.nn.Module, params, x, y) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.stack([p.grad.detach().norm() for p in params])


def init_snapshot(trial: TrialSpec) -> Snapshot:
    """The trial's network at initialization (same seed as its run) and its first training batch."""
    torch.manual_seed(trial.seed)
    w = trial.workload
    data = load_dataset(w.dataset, w.data)
    plan(trial, len(data.x_train))  # the same checks as a run (batch size against the data)
    model = create_model(w.model, trial.depth, in_shape=data.in_shape, num_classes=data.num_classes,
                         width=w.width, norm=w.norm, init=w.init, options=w.model_options)
    model.train()
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(_seed(trial.seed, 0)))
    idx = perm[: trial.budget.batch_size]
    found = require(model)
    params = [q for _, q in found]
    x, y = data.x_train[idx], data.y_train[idx]
    g = _grads(model, params, x, y)
    wn = torch.stack([q.detach().norm() for q in params])
    return Snapshot(model, [n for n, _ in found], params, x, y, wn, g)


def critical_lr_check(trial: TrialSpec, lrs: torch.Tensor | None = None, points: int = 61) -> dict[str, Any]:
    """Predicted eta_crit from one snapshot against the empirical minimizer of the one-step spread.

    For each learning rate on a log grid: one plain SGD step on the scale-invariant tensors from the
    same snapshot and batch, then the spread of c_hat on that batch (the ELR spread at any fixed
    learning rate). The model's prediction of the same curve comes along.
    """
    snap = init_snapshot(trial)
    eta_crit = float(elr.critical_lr(snap.c_hat.double()))
    if lrs is None:
        lrs = eta_crit * torch.logspace(-3, 3, points, dtype=torch.float64)
    start = copy.deepcopy(snap.model.state_dict())
    measured = []
    for eta in lrs.tolist():
        snap.model.load_state_dict(start)
        _grads(snap.model, snap.params, snap.x, snap.y)
        with torch.no_grad():
            for q in snap.params:  # one plain SGD step on the scale-invariant tensors only
                q.add_(q.grad, alpha=-eta)
        g = _grads(snap.model, snap.params, snap.x, snap.y)
        w = torch.stack([q.detach().norm() for q in snap.params])
        measured.append(float(elr.spread(elr.c_hat(w, g).double())))
    snap.model.load_state_dict(start)
    measured_t = torch.tensor(measured, dtype=torch.float64)
    predicted = one_step_spread(snap.c_hat, lrs)
    rotation = one_step_spread(snap.c_hat, lrs, "rotation")
    best = float(lrs[int(measured_t.argmin())])
    eta_rot = float(elr.rotation_lr(snap.c_hat.double()))
    return {
        "layers": len(snap.names), "eta_crit": eta_crit, "empirical_argmin": best, "ratio": best / eta_crit,
        "model_argmin": float(lrs[int(predicted.argmin())]), "eta_rotation": eta_rot,
        "rotation_argmin": float(lrs[int(rotation.argmin())]),
        "spread_init": float(elr.spread(snap.c_hat.double())), "spread_min_measured": float(measured_t.min()),
        "spread_min_predicted": float(predicted.min()), "spread_min_rotation": float(rotation.min()),
        "target_lr": trial.lr, "max_elr_at_target": float((trial.lr * snap.c_hat).max()),
        "lrs": lrs.tolist(), "measured": measured, "predicted": predicted.tolist(), "rotation": rotation.tolist(),
    }


def predictivity(spec: StudySpec, trial: TrialSpec) -> dict[str, Any]:
    """Predicted (random walk from c_l measured at init) against measured ||W_l|| and E_l, every
    log step of a real run of the trial (run here, with its own log period)."""
    snap = init_snapshot(trial)
    store = StudyStore.create(spec)
    run_trial(trial, store, resume=False)
    names, rows = store.layers(trial.trial_id)
    steps = rows[-1]["step"]
    lr_by_step = {r["step"]: r["lr"][0] for r in rows}  # the rates the run applied, warm-up included
    sim = simulate(snap.w * snap.g, snap.w, trial.lr, steps, optimizer=trial.optimizer,
                   schedule=lambda t: lr_by_step.get(t + 1, trial.lr))
    out = []
    for r in rows:
        s = r["step"]  # the row describes the update that made step s, taken at weights of step s-1
        w_meas = torch.tensor(r["w_norm"], dtype=torch.float64)
        e_meas = torch.tensor(r["elr"], dtype=torch.float64)
        w_pred, e_pred = sim.w_norm[s - 1], sim.elr[s - 1]
        out.append({
            "step": s,
            "w_rel_err_median": float(((w_pred - w_meas).abs() / w_meas).median()),
            "elr_log10_err_median": float((torch.log10(e_pred) - torch.log10(e_meas)).abs().median()),
            "spread_measured": float(elr.spread(e_meas)), "spread_predicted": float(elr.spread(e_pred)),
            "c_drift_median": float(((w_meas * torch.tensor(r["g_norm"], dtype=torch.float64))
                                     / (snap.w * snap.g)).log10().abs().median()),
        })
    return {"layers": len(names), "steps": steps, "rows": out}


def spread_summary(spec: StudySpec) -> list[TrialResult]:
    """Run a (small) study inline, reusing finished trials, and return every trial's result (its
    spread summaries are what warm-up comparisons read)."""
    store = StudyStore.create(spec)
    return [store.result(t.trial_id) if store.finished(t.trial_id) else run_trial(t, store) for t in spec.expand()]

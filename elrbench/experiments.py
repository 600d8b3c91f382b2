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
from elrbench.diagnostics import Measure, require
from elrbench.result import TrialResult
from elrbench.schedules import scheduled_lr
from elrbench.spec import StudySpec, TrialSpec
from elrbench.store import StudyStore
from elrbench.theory import one_step_spread, simulate
from elrbench.train import _seed, plan, run_trial
from elrbench.warmup import create_warmup
from elrbench.workloads import create_model, load_dataset


@dataclass
class Snapshot(Measure):
    """A network at one moment: its norms (a diagnostics.Measure: w = ||W_l||, g = ||g_l|| on the
    batch, c_hat) with the model, its scale-invariant tensors and the batch they were measured on."""

    model: torch.nn.Module
    names: list[str]
    params: list[torch.nn.Parameter]
    x: torch.Tensor
    y: torch.Tensor

    @property
    def dims(self) -> list[int]:  # each scale-invariant tensor's element count (the simulator's dim)
        return [q.numel() for q in self.params]


def _grads(model: torch.nn.Module, params, x, y) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.stack([p.grad.detach().norm() for p in params])


def init_snapshot(trial: TrialSpec, batch: int = 0) -> Snapshot:
    """The trial's network at initialization (same seed as its run) and a training batch of its
    first epoch (batch 0: the first)."""
    torch.manual_seed(trial.seed)
    w = trial.workload
    data = load_dataset(w.dataset, w.data)
    plan(trial, len(data.x_train))  # the same checks as a run (batch size against the data)
    model = create_model(w.model, trial.depth, in_shape=data.in_shape, num_classes=data.num_classes,
                         width=w.width, norm=w.norm, init=w.init, options=w.model_options)
    model.train()
    perm = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(_seed(trial.seed, 0)))
    bs = trial.budget.batch_size
    if not 0 <= batch < len(data.x_train) // bs:
        raise ValueError(f"batch {batch} is not a batch of the first epoch ({len(data.x_train) // bs} batches)")
    idx = perm[batch * bs : (batch + 1) * bs]
    found = require(model)
    params = [q for _, q in found]
    x, y = data.x_train[idx], data.y_train[idx]
    g = _grads(model, params, x, y)
    wn = torch.stack([q.detach().norm() for q in params])
    return Snapshot(w=wn, g=g, model=model, names=[n for n, _ in found], params=params, x=x, y=y)


@dataclass(frozen=True)
class CriticalLrCheck:
    """critical_lr_check's answer for one network and batch: eta_crit against the measured minimizer of
    the one-step spread, the models' curves on the same lr grid, and the top layer at eta_crit."""

    layers: int
    eta_crit: float
    empirical_argmin: float  # the lr of the grid whose step leaves the smallest measured spread
    ratio: float  # empirical_argmin / eta_crit
    model_argmin: float  # the constant-c model's minimizer on the grid
    eta_rotation: float  # (c_max^2 c_min)^(-1/3)
    rotation_argmin: float  # the rotation model's minimizer on the grid
    spread_init: float  # D, the log10 spread of c_hat before the step
    spread_min_measured: float
    spread_min_predicted: float
    spread_min_rotation: float
    target_lr: float  # the trial's lr
    max_elr_at_target: float
    lrs: list[float]
    measured: list[float]  # the measured spread after one step at each lr
    predicted: list[float]  # the constant-c model's
    rotation: list[float]  # the rotation model's
    top_layer: str  # the layer of the largest c_hat
    top_elr: float  # its ELR at eta_crit
    top_base_ratio: float  # its base gradient after / before the step at eta_crit
    top_cos: float  # cos(arctan top_elr): what the rotation model says that ratio is


def critical_lr_check(trial: TrialSpec, lrs: torch.Tensor | None = None, points: int = 61,
                      batch: int = 0) -> CriticalLrCheck:
    """Predicted eta_crit from one snapshot against the empirical minimizer of the one-step spread.

    For each learning rate on a log grid: one plain SGD step on the scale-invariant tensors from the
    same snapshot and batch, then the spread of c_hat on that batch (the ELR spread at any fixed
    learning rate). The model's prediction of the same curve comes along.
    """
    snap = init_snapshot(trial, batch)
    eta_crit = float(elr.critical_lr(snap.c_hat.double()))
    if lrs is None:
        lrs = eta_crit * torch.logspace(-3, 3, points, dtype=torch.float64)
    start = copy.deepcopy(snap.model.state_dict())

    def after_step(eta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """||W|| and ||g|| of every tensor after one plain SGD step at eta (scale-invariant tensors only)."""
        snap.model.load_state_dict(start)
        _grads(snap.model, snap.params, snap.x, snap.y)
        with torch.no_grad():
            for q in snap.params:
                q.add_(q.grad, alpha=-eta)
        g = _grads(snap.model, snap.params, snap.x, snap.y)
        return torch.stack([q.detach().norm() for q in snap.params]), g

    measured = []
    for eta in lrs.tolist():
        w, g = after_step(eta)
        measured.append(float(elr.spread(elr.c_hat(w, g).double())))
    # the top layer (largest c_hat) at eta_crit: its ELR, and its base gradient after/before the step
    top = int(snap.c_hat.argmax())
    w1, g1 = after_step(eta_crit)
    snap.model.load_state_dict(start)
    e_top = eta_crit * float(snap.c_hat[top])
    top_ratio = float(elr.base_gradient(w1[top], g1[top]) / elr.base_gradient(snap.w[top], snap.g[top]))
    measured_t = torch.tensor(measured, dtype=torch.float64)
    predicted = one_step_spread(snap.c_hat, lrs)
    rotation = one_step_spread(snap.c_hat, lrs, "rotation")
    best = float(lrs[int(measured_t.argmin())])
    eta_rot = float(elr.rotation_lr(snap.c_hat.double()))
    return CriticalLrCheck(
        layers=len(snap.names), eta_crit=eta_crit, empirical_argmin=best, ratio=best / eta_crit,
        model_argmin=float(lrs[int(predicted.argmin())]), eta_rotation=eta_rot,
        rotation_argmin=float(lrs[int(rotation.argmin())]),
        spread_init=float(elr.spread(snap.c_hat.double())), spread_min_measured=float(measured_t.min()),
        spread_min_predicted=float(predicted.min()), spread_min_rotation=float(rotation.min()),
        target_lr=trial.lr, max_elr_at_target=float((trial.lr * snap.c_hat).max()),
        lrs=lrs.tolist(), measured=measured, predicted=predicted.tolist(), rotation=rotation.tolist(),
        top_layer=snap.names[top], top_elr=e_top, top_base_ratio=top_ratio, top_cos=1 / (1 + e_top**2) ** 0.5)


@dataclass(frozen=True)
class RotationRow:
    """One network and batch of rotation_fit."""

    network: str
    batch: int
    layers: int
    D: float  # the spread before the step
    ratio: float  # measured minimizer / eta_crit
    predicted: float  # 10^(-D/6), the rotation model's ratio
    rotation_argmin_ratio: float
    top_elr: float
    top_base_ratio: float
    top_cos: float


@dataclass(frozen=True)
class RotationFit:
    rows: list[RotationRow]
    slope: float  # of log10(ratio) on D (the model: -1/6)
    slope_interval: tuple[float, float]  # 95%, bootstrap over networks
    networks: int
    intercept: float


def rotation_fit(spec: StudySpec, batches: int = 3, points: int = 61, seed: int = 0,
                 progress: Any = None) -> RotationFit:
    """The rotation-aware prediction against real networks (docs/science.md, section 7): for every
    network of the spec (workload x depth; its first lr and seed) and each of the first `batches`
    batches, the one-step scan of critical_lr_check; then the least-squares slope of
    log10(measured minimizer / eta_crit) on the spread D before the step (the model says -1/6),
    with a 95% interval from a bootstrap over networks (a network's batches move together)."""
    import numpy as np

    nets = {}
    for t in spec.expand():
        nets.setdefault((t.workload.name, t.depth), t)
    rows = []
    for (name, depth), t in nets.items():
        for b in range(batches):
            r = critical_lr_check(t, points=points, batch=b)
            rows.append(RotationRow(f"{name} d{depth}", b, r.layers, r.spread_init, r.ratio, 10 ** (-r.spread_init / 6),
                                    r.rotation_argmin / r.eta_crit, r.top_elr, r.top_base_ratio, r.top_cos))
            if progress:
                progress(rows[-1])
    d = np.array([r.D for r in rows])
    y = np.log10([r.ratio for r in rows])
    groups = np.array([r.network for r in rows])
    slope = _slope(d, y)
    rng = np.random.default_rng(seed)
    names = sorted(set(groups))
    boot = []
    for _ in range(2000):
        pick = rng.choice(names, size=len(names))
        idx = np.concatenate([np.flatnonzero(groups == n) for n in pick])
        if np.ptp(d[idx]) > 0:
            boot.append(_slope(d[idx], y[idx]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return RotationFit(rows, slope, (float(lo), float(hi)), len(names), float(np.mean(y) - slope * np.mean(d)))


def _slope(x, y) -> float:
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


@dataclass(frozen=True)
class PredictivityRow:
    """One log step of predictivity: medians over the layers."""

    step: int
    w_rel_err_median: float  # |predicted - measured| / measured ||W_l||
    elr_log10_err_median: float  # |log10 predicted / measured E_l|
    spread_measured: float
    spread_predicted: float
    c_drift_median: float  # |log10 c_l / c_l(init)|: the model assumes 0


@dataclass(frozen=True)
class Predictivity:
    layers: int
    steps: int
    rows: list[PredictivityRow]


def predictivity(spec: StudySpec, trial: TrialSpec) -> Predictivity:
    """Predicted (random walk from c_l measured at init) against measured ||W_l|| and E_l, every
    log step of a real run of the trial (run here, with its own log period)."""
    snap = init_snapshot(trial)
    store = StudyStore.create(spec)
    run_trial(trial, store, resume=False)
    names, rows = store.layers(trial.trial_id)
    steps = rows[-1]["step"]
    lr_by_step = {r["step"]: r["lr"][0] for r in rows}  # the rates the run applied, warm-up included
    sim = simulate(snap.base, snap.w, trial.lr, steps, optimizer=trial.optimizer,
                   schedule=lambda t: lr_by_step.get(t + 1, trial.lr), dim=snap.dims)
    out = []
    for r in rows:
        s = r["step"]  # the row describes the update that made step s, taken at weights of step s-1
        w_meas = torch.tensor(r["w_norm"], dtype=torch.float64)
        e_meas = torch.tensor(r["elr"], dtype=torch.float64)
        w_pred, e_pred = sim.w_norm[s - 1], sim.elr[s - 1]
        out.append(PredictivityRow(
            step=s,
            w_rel_err_median=float(((w_pred - w_meas).abs() / w_meas).median()),
            elr_log10_err_median=float((torch.log10(e_pred) - torch.log10(e_meas)).abs().median()),
            spread_measured=float(elr.spread(e_meas)), spread_predicted=float(elr.spread(e_pred)),
            c_drift_median=float((elr.base_gradient(w_meas, torch.tensor(r["g_norm"], dtype=torch.float64))
                                  / snap.base).log10().abs().median())))
    return Predictivity(len(names), steps, out)


@dataclass(frozen=True)
class Forecast:
    """The random-walk model's prediction for one arm of a study (its first seed's network at init)."""

    trial_id: str
    depth: int
    lr: float
    optimizer: str
    warmup: str
    steps: int
    spread_init: float  # log10 spread of the first step's ELRs (after any per-layer factor)
    spread_early_mean: float  # mean over the first K steps (diagnostics.early_steps)
    spread_mean: float  # mean over the run
    lr_bound_steps: int  # steps at which the warm-up set a rate below the schedule's


def forecast(spec: StudySpec) -> list[Forecast]:
    """Predicted ELR spreads of every (workload, depth, lr, optimizer, warm-up, schedule) of a study,
    from the random walk started at the first seed's c_l at init, each layer with its own element
    count, driven by the real warm-up controller for the run's number of steps. Nothing is trained:
    what a study predicts, before it runs (pre-registration)."""
    out, seen = [], set()
    for t in spec.expand():
        arm = (t.workload.name, t.depth, t.lr, t.optimizer.model_dump_json(), t.warmup.label,
               t.schedule.model_dump_json())
        if arm in seen:
            continue
        seen.add(arm)
        snap = init_snapshot(t)
        steps = plan(t, len(load_dataset(t.workload.dataset, t.workload.data).x_train)).total_steps
        warm = create_warmup(t.warmup.name, t.warmup.options, steps, t.optimizer)
        sched = [scheduled_lr(t.schedule, t.lr, i, steps) for i in range(steps)]
        tr = simulate(snap.base, snap.w, t.lr, steps, optimizer=t.optimizer, warmup=warm,
                      schedule=sched.__getitem__, dim=snap.dims)
        k = min(spec.diagnostics.early_steps, steps)
        below = int((tr.lr < torch.tensor(sched, dtype=torch.float64) * (1 - 1e-12)).sum())
        out.append(Forecast(t.trial_id, t.depth, t.lr, t.optimizer.label, t.warmup.label, steps,
                            float(tr.spread[0]), float(tr.spread[:k].mean()), float(tr.spread.mean()), below))
    return out


def spread_summary(spec: StudySpec) -> list[TrialResult]:
    """Run a (small) study inline, reusing finished trials, and return every trial's result (its
    spread summaries are what warm-up comparisons read)."""
    store = StudyStore.create(spec)
    return [store.result(t.trial_id) if store.finished(t.trial_id) else run_trial(t, store) for t in spec.expand()]


SPREAD_FIELDS = {"early": "spread_early_mean", "run": "spread_mean", "updates": "spread_update_mean",
                 "smoothed": "spread_smooth_mean", "accuracy": "final_test_acc", "warm-up steps": "warmup_steps"}


def paired_spreads(rows: list[TrialResult], field: str, reference: str) -> list[dict[str, Any]]:
    """Trials that differ from a reference only in `field` (warmup or optimizer), paired by seed: per
    (other grid values, value of field), the mean difference value - reference of each spread summary
    and of the final accuracy, with a paired t interval over the seeds (elrbench.stats)."""
    from elrbench import stats
    from elrbench.result import POINT

    others = [k for k in POINT if k not in (field, "seed")]
    key = lambda r: tuple(getattr(r, k) for k in others)  # noqa: E731
    ref = {(key(r), r.seed): r for r in rows if getattr(r, field) == reference and r.outcome != "failed"}
    cells: dict[tuple, list[tuple[TrialResult, TrialResult]]] = {}
    for r in rows:
        if getattr(r, field) != reference and r.outcome != "failed" and (key(r), r.seed) in ref:
            cells.setdefault((key(r), getattr(r, field)), []).append((r, ref[(key(r), r.seed)]))
    out = []
    for (k, value), pairs in cells.items():
        row = {**dict(zip(others, k)), field: value, "seeds": len(pairs)}
        for name, f in SPREAD_FIELDS.items():
            both = [(getattr(x, f), getattr(y, f)) for x, y in pairs
                    if getattr(x, f) is not None and getattr(y, f) is not None]
            row[name] = stats.mean_difference_ci([a for a, _ in both], [b for _, b in both])
        out.append(row)
    return out

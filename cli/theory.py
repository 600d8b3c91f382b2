"""`elrbench theory ...`: the weight-dynamics model and its checks against real networks."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
import typer
import yaml
from pydantic import ValidationError
from rich.table import Table

from elrbench import elr
from elrbench.defaults import DEFAULT_OPTIMIZER, NO_WARMUP
from elrbench.diagnostics import grad_explosion_slope, self_check
from elrbench.errors import SpecError, UsageError
from elrbench.experiments import critical_lr_check, forecast, init_snapshot, predictivity, spread_summary
from elrbench.optimizers import OPTIMIZERS
from elrbench.spec import OptimizerSpec, WarmupSpec, load_spec, problems_of
from elrbench.theory import simulate, steps_to_spread
from elrbench.warmup import WARMUPS, create_warmup
from elrbench.workloads import create_model, load_dataset

from .common import command, console, pick_trial
from .validate import OVERRIDES

app = typer.Typer(help="The weight-dynamics model: critical learning rate, simulation, self-checks.",
                  no_args_is_help=True)
TRIAL = typer.Option(None, "--trial", help="trial id, unique prefix or index (default: the first trial)")


@app.command("critical-lr")
@command
def critical_lr_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
                    trial: Optional[str] = TRIAL) -> None:
    """Per-layer c_hat and ELR of a trial's network at initialization on its first batch; spread and eta_crit."""
    s = load_spec(spec, overrides or [])
    t = pick_trial(s, trial, spec)
    snap = init_snapshot(t)
    e = t.lr * snap.c_hat
    table = Table(title=f"{t.trial_id} at initialization (batch of {len(snap.y)})", title_justify="left")
    for col in ("#", "tensor", "||W||", "||g||", "c_hat", f"ELR at lr={t.lr:g}", "classic lr/||W||^2"):
        table.add_column(col, justify="right" if col != "tensor" else "left", overflow="fold")
    classic = elr.classic_elr(torch.tensor(t.lr, dtype=snap.w.dtype), snap.w).tolist()
    for i, (n, w, g, c, el, cl) in enumerate(zip(snap.names, snap.w.tolist(), snap.g.tolist(), snap.c_hat.tolist(),
                                                 e.tolist(), classic)):
        table.add_row(str(i), n, f"{w:.4g}", f"{g:.4g}", f"{c:.4g}", f"{el:.4g}" + (" >1" if el > 1 else ""),
                      f"{cl:.4g}")
    console.print(table)
    eta = float(elr.critical_lr(snap.c_hat.double()))
    console.print(f"ELR spread log10(max/min) = {float(elr.spread(snap.c_hat.double())):.3f}   "
                  f"std of log10 ELR = {float(elr.spread_std(e.double())):.3f}")
    console.print(f"eta_crit = 1/sqrt(c_max c_min) = {eta:.4g}   target lr = {t.lr:g}   "
                  + ("(the critical warm-up would act: lr > eta_crit)" if t.lr > eta
                     else "(lr <= eta_crit: no warm-up needed by this rule)"))
    c = snap.c_hat.double()
    console.print(f"eta~ = (c_max^2 c_min)^(-1/3) = {float(elr.rotation_lr(c)):.4g} (the rotation-aware model's "
                  f"one-step minimizer); 1/c_max = {float(elr.overshoot_free_lr(c)):.4g} (the cap: no layer's ELR "
                  "above 1)")
    console.print(f"gradient explosion: slope of log10 ||g|| over layer position = "
                  f"{grad_explosion_slope(snap.g):+.4f} per layer")


@app.command("check")
@command
def check_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
              depth: Optional[int] = typer.Option(None, help="depth to check (default: the smallest in the grid)"),
              batch: int = typer.Option(16, help="examples in the check batch")) -> None:
    """Scale-invariance self-check of every discovered tensor of each workload's network."""
    s = load_spec(spec, overrides or [])
    d = depth or min(s.grid.depth)
    bad = 0
    for w in s.workloads:
        torch.manual_seed(0)
        data = load_dataset(w.dataset, w.data)
        model = create_model(w.model, d, in_shape=data.in_shape, num_classes=data.num_classes, width=w.width,
                             norm=w.norm, init=w.init, options=w.model_options)
        checks = self_check(model, data.x_train[:batch], data.y_train[:batch])
        failed = [c for c in checks if not c.ok]
        bad += len(failed)
        worst_l = max(c.loss_change for c in checks)
        worst_c = max(abs(c.cosine) for c in checks)
        console.print(f"{w.name} depth {d}: {len(checks)} scale-invariant tensors, {len(failed)} failed; worst "
                      f"|L(3W)-L(W)|/L = {worst_l:.1e}, worst |cos(g, W)| = {worst_c:.1e}")
        for c in failed:
            console.print(f"  FAILED {c.name}: loss change {c.loss_change:.2e}, cos {c.cosine:.2e}")
    if bad:
        raise typer.Exit(1)


@app.command("simulate")
@command
def simulate_cmd(
    spec: Optional[Path] = typer.Option(None, help="take c_l and ||W_l|| from this spec's trial network at init"),
    trial: Optional[str] = TRIAL,
    layers: int = typer.Option(110, help="toy: number of layers"),
    spread: float = typer.Option(8.6, help="toy: log10 spread of the base gradients c_l (geometric)"),
    top: float = typer.Option(10.0, help="toy: log10 of the largest base gradient"),
    lr: float = typer.Option(0.1, help="target learning rate"),
    steps: int = typer.Option(200),
    optimizer: str = typer.Option(DEFAULT_OPTIMIZER, help=f"one of {', '.join(OPTIMIZERS.names())}"),
    momentum: Optional[float] = typer.Option(None, help="sgdm's momentum (default 0.9)"),
    weight_decay: float = typer.Option(0.0),
    warmup: str = typer.Option(NO_WARMUP, help=f"one of {', '.join(WARMUPS.names())}, with options as in a spec: "
                                            "'{name: linear, steps: 50}'"),
    trains_at: Optional[int] = typer.Option(None, help="for warm-ups that read the training accuracy (he_classic): "
                                                       "the step from which the batch accuracy counts as 1 (the "
                                                       "model has no data)"),
    dim: int = typer.Option(32, help="toy: elements per layer (with --spec, each layer's own element count)"),
    png: Optional[Path] = typer.Option(None, help="write the ELR trajectories to this PNG"),
) -> None:
    """Predicted ELR trajectories from the random-walk model (a toy, or a real network's c_l at init),
    with any registered optimizer and warm-up."""
    opt = _option("--optimizer", OptimizerSpec, {"name": optimizer, "momentum": momentum, "weight_decay": weight_decay})
    warm_spec = _option("--warmup", WarmupSpec, warmup)
    warm = create_warmup(warm_spec.name, warm_spec.options, steps, opt)
    if warm.needs_batch_acc and trains_at is None:
        raise UsageError(f"--warmup {warm_spec.name} reads the training accuracy, which the random-walk model does "
                         "not have: give --trains-at STEP")
    if spec is not None:
        t = pick_trial(load_spec(spec), trial, spec)
        snap = init_snapshot(t)
        c, w0, title = snap.w * snap.g, snap.w, f"{t.trial_id} (c_l measured at init)"
        dims = snap.dims
    else:
        c = torch.logspace(top, top - spread, layers, dtype=torch.float64)
        w0, title = torch.ones(layers, dtype=torch.float64), f"toy: {layers} layers, c_l spread 10^{spread:g}"
        dims = dim
    acc = (lambda step: float(step >= trains_at)) if trains_at is not None else None
    tr = simulate(c, w0, lr, steps, optimizer=opt, warmup=warm, batch_acc=acc, dim=dims)
    title = f"{title}; {opt.name}, lr {lr:g}, warm-up {warm_spec.label}"
    table = Table(title=title, title_justify="left")
    for col in ("step", "lr", "log10 spread", "min ELR", "max ELR"):
        table.add_column(col, justify="right")
    marks = sorted({0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, steps - 1} & set(range(steps)))
    for i in marks:
        table.add_row(str(i), f"{float(tr.lr[i]):.3g}", f"{float(tr.spread[i]):.3f}",
                      f"{float(tr.elr[i].min()):.3g}", f"{float(tr.elr[i].max()):.3g}")
    console.print(table)
    if warm_spec.name == NO_WARMUP and opt.name == DEFAULT_OPTIMIZER:
        e0 = lr * c / w0**2
        if float(e0.max()) < 1:
            console.print(f"closed form: spread < 0.05 after {steps_to_spread(e0, 0.05)} steps")
        else:  # the continuous form ignores the overshoot of a step with E > 1
            console.print("closed form: not applicable while some layer has ELR > 1 (it would overshoot)")
    if png:
        from elrbench.plots import trajectory

        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(trajectory(tr, title))
        console.print(f"wrote {png}")


def _option(flag: str, model, value):
    """A spec part given on the command line: a name, or a YAML mapping as in a spec."""
    try:
        if isinstance(value, str) and value.strip().startswith("{"):
            value = yaml.safe_load(value)
        return model.model_validate(value)
    except yaml.YAMLError as e:
        raise UsageError(f"{flag}: not YAML: {str(e).splitlines()[0]}") from None
    except ValidationError as e:
        raise SpecError(problems_of(e), flag) from None


@app.command("scan")
@command
def scan_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
             trial: Optional[str] = TRIAL,
             points: int = typer.Option(61, help="learning rates on the log grid eta_crit * 10^[-3, 3]")) -> None:
    """Predicted eta_crit against the empirical minimizer of the one-step spread (same snapshot and batch)."""
    s = load_spec(spec, overrides or [])
    t = pick_trial(s, trial, spec)
    r = critical_lr_check(t, points=points)
    table = Table(title=f"{t.trial_id}: one SGD step from init, spread of c_hat after it", title_justify="left")
    for col in ("lr", "lr / eta_crit", "measured log10 spread", "model: constant c", "model: rotation"):
        table.add_column(col, justify="right")
    for i in range(0, len(r.lrs), max(1, len(r.lrs) // 12)):
        table.add_row(f"{r.lrs[i]:.3g}", f"{r.lrs[i] / r.eta_crit:.3g}", f"{r.measured[i]:.3f}",
                      f"{r.predicted[i]:.3f}", f"{r.rotation[i]:.3f}")
    console.print(table)
    console.print(f"layers {r.layers}, spread at init D = {r.spread_init:.3f}; eta_crit {r.eta_crit:.4g}; "
                  f"empirical minimizer {r.empirical_argmin:.4g} (ratio to eta_crit {r.ratio:.3f}); "
                  f"constant-c model minimizer {r.model_argmin:.4g}; rotation model: eta~ = "
                  f"(c_max^2 c_min)^(-1/3) = {r.eta_rotation:.4g} (ratio {r.eta_rotation / r.eta_crit:.3f}"
                  f" = 10^(-D/6)), its minimizer {r.rotation_argmin:.4g}; min spread measured "
                  f"{r.spread_min_measured:.3f}, constant-c model {r.spread_min_predicted:.3f}, rotation model "
                  f"{r.spread_min_rotation:.3f}", soft_wrap=True)


@app.command("rotation")
@command
def rotation_cmd(spec: Path = typer.Argument(..., help="study spec: its workloads x depths are the networks"),
                 overrides: list[str] = OVERRIDES,
                 batches: int = typer.Option(3, help="batches of the first epoch to scan each network on"),
                 points: int = typer.Option(61, help="learning rates on the log grid eta_crit * 10^[-3, 3]")) -> None:
    """The rotation-aware model against real networks: measured one-step spread minimizer / eta_crit
    against 10^(-D/6), the fitted slope on D with its interval, and the top layer's base-gradient
    change against cos(theta)."""
    from elrbench.experiments import rotation_fit

    s = load_spec(spec, overrides or [])
    console.print(f"{s.study_id}: scanning {len({(t.workload.name, t.depth) for t in s.expand()})} networks x "
                  f"{batches} batches ({points} learning rates each)", highlight=False)
    r = rotation_fit(s, batches=batches, points=points,
                     progress=lambda row: console.print(f"  {row.network} batch {row.batch}: D {row.D:.2f}, "
                                                        f"ratio {row.ratio:.3f}", style="dim", highlight=False))
    table = Table(title="one SGD step from init: measured minimizer / eta_crit against the rotation model",
                  title_justify="left")
    for col in ("network", "batch", "D (log10 spread)", "measured ratio", "10^(-D/6)", "rotation-model argmin",
                "top layer ELR at eta_crit", "top c'/c measured", "cos(arctan E)"):
        table.add_column(col, justify="right" if col != "network" else "left")
    for row in r.rows:
        table.add_row(row.network, str(row.batch), f"{row.D:.2f}", f"{row.ratio:.3f}",
                      f"{row.predicted:.3f}", f"{row.rotation_argmin_ratio:.3f}", f"{row.top_elr:.3g}",
                      f"{row.top_base_ratio:.3g}", f"{row.top_cos:.3g}")
    console.print(table)
    lo, hi = r.slope_interval
    verdict = "includes" if lo <= -1 / 6 <= hi else "excludes"
    console.print(f"slope of log10(ratio) on D: {r.slope:+.3f} [{lo:+.3f}, {hi:+.3f}] (95%, bootstrap over "
                  f"{r.networks} networks; intercept {r.intercept:+.3f}); the rotation model says -0.167: the "
                  f"interval {verdict} it", highlight=False, soft_wrap=True)


@app.command("predict")
@command
def predict_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
                trial: Optional[str] = TRIAL) -> None:
    """Run a trial and compare its measured ||W_l|| and ELRs with the model's prediction from init."""
    s = load_spec(spec, overrides or [])
    t = pick_trial(s, trial, spec)
    r = predictivity(s, t)
    table = Table(title=f"{t.trial_id}: predicted vs measured ({r.layers} layers)", title_justify="left")
    for col in ("step", "median |dW|/W", "median |log10 E err|", "spread meas.", "spread pred.",
                "median |log10 c/c0|"):
        table.add_column(col, justify="right")
    for row in r.rows:
        if row.step in (1, 2, 5) or row.step % max(1, r.steps // 10) == 0:
            table.add_row(str(row.step), f"{row.w_rel_err_median:.3f}", f"{row.elr_log10_err_median:.3f}",
                          f"{row.spread_measured:.3f}", f"{row.spread_predicted:.3f}",
                          f"{row.c_drift_median:.3f}")
    console.print(table)
    console.print("last column: drift of the measured base gradient c_l from its value at init (the model "
                  "assumes 0)")


@app.command("forecast")
@command
def forecast_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES) -> None:
    """Before a study runs: the random-walk model's ELR spreads for each of its arms (depth, lr, optimizer,
    warm-up), from the first seed's network at init, each layer with its own element count."""
    s = load_spec(spec, overrides or [])
    rows = forecast(s)
    table = Table(title=f"{s.study_id}: predicted ELR spread (log10 max/min), random-walk model", title_justify="left")
    for col in ("depth", "lr", "optimizer", "warm-up", "steps", "first step", f"mean first {s.diagnostics.early_steps}",
                "mean run", "steps below schedule"):
        table.add_column(col, justify="right")
    for f in rows:
        table.add_row(str(f.depth), f"{f.lr:g}", f.optimizer, f.warmup, str(f.steps), f"{f.spread_init:.2f}",
                      f"{f.spread_early_mean:.2f}", f"{f.spread_mean:.2f}", str(f.lr_bound_steps))
    console.print(table)
    console.print("one network per arm (the first seed's), constant base gradients c_l as measured at init; "
                  "a prediction of spreads, not of trainability", style="dim")


@app.command("spreads")
@command
def spreads_cmd(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
                against: list[str] = typer.Option([], "--against", help="FIELD=VALUE (FIELD: warmup or optimizer, "
                                                  "as labelled in tables): also print every other value of FIELD "
                                                  "minus this one, paired by seed; repeat for several")) -> None:
    """Run a study inline (reusing finished trials, also those of `elrbench submit`) and print each
    trial's ELR-spread summaries, and paired differences between warm-ups or optimizers."""
    s = load_spec(spec, overrides or [])
    refs = []
    for a in against:
        fld, _, value = a.partition("=")
        if fld not in ("warmup", "optimizer") or not value:
            raise UsageError(f"--against {a!r}: give warmup=LABEL or optimizer=LABEL (labels as in the tables)")
        refs.append((fld, value))
    rows = spread_summary(s)
    table = Table(title=f"{s.study_id}: ELR spread (log10 max/min)", title_justify="left")
    for col in ("depth", "lr", "optimizer", "warm-up", f"mean first {s.diagnostics.early_steps}", "mean run",
                "max", "updates (run)", "smoothed (run)", "overshoot steps", "dead layers (max)", "warm-up steps",
                "test acc", "outcome"):
        table.add_column(col, justify="right")
    fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"  # noqa: E731
    for r in rows:
        table.add_row(str(r.depth), f"{r.lr:g}", r.optimizer, r.warmup, fmt(r.spread_early_mean), fmt(r.spread_mean),
                      fmt(r.spread_max), fmt(r.spread_update_mean), fmt(r.spread_smooth_mean), str(r.overshoot_steps),
                      str(r.dead_layers_max), str(r.warmup_steps), fmt(r.final_test_acc), r.outcome)
    console.print(table)
    from elrbench.experiments import SPREAD_FIELDS, paired_spreads

    for fld, value in refs:
        found = paired_spreads(rows, fld, value)
        if not found:
            raise UsageError(f"--against {fld}={value}: no trial of the study has that {fld} (labels: "
                             f"{', '.join(sorted({getattr(r, fld) for r in rows}))})")
        t = Table(title=f"{fld} minus {value}, paired by seed (mean difference [95% t interval])", title_justify="left")
        for col in ("depth", "lr", fld, "seeds", *SPREAD_FIELDS):
            t.add_column(col, justify="right")
        for p in found:
            t.add_row(str(p["depth"]), f"{p['lr']:g}", p[fld], str(p["seeds"]),
                      *[p[n].text(".3f" if n == "accuracy" else ".2f", signed=True) + (" *" if p[n].excludes(0) else "")
                        for n in SPREAD_FIELDS])
        console.print(t)
    if refs:
        console.print("* : the interval excludes 0", style="dim")

"""The report's figures, each returned as PNG bytes.

Figures are matplotlib Figure objects drawn without pyplot, so no backend is chosen and no global
state is touched: importing or calling this module changes nothing for the rest of the process.
"""
from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from elrbench import elr
from elrbench.theory import closed_form

if TYPE_CHECKING:
    from elrbench.result import TrialResult
    from elrbench.theory import Trajectory

MARKERS = "osD^v<>"
DASHES = ("-", "--", ":", "-.")  # distinct dashes: identical curves stay visible


def _log_depths(ax, depths: list[int]) -> None:
    """A log2 depth axis whose limits come from the depths, not from the data drawn: with nothing
    drawn (every trial failed or diverged) matplotlib's default limits (0, 1) cannot be log-scaled."""
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(depths) / 1.25, max(depths) * 1.25)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def spread_curves(title: str, trials: list[tuple[TrialResult, list[dict[str, Any]]]]) -> bytes:
    """ELR spread against step: one panel per depth, one line per warm-up (mean over seeds)."""
    depths = sorted({r.depth for r, _ in trials})
    fig = Figure(figsize=(3.6 * len(depths), 3.2))
    axes = fig.subplots(1, len(depths), squeeze=False, sharey=True)
    for ax, d in zip(axes[0], depths):
        by_warm: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r, hist in trials:
            if r.depth == d:
                for h in hist:
                    if h.get("elr_spread") is not None and math.isfinite(h["elr_spread"]):
                        by_warm[r.warmup][h["step"]].append(h["elr_spread"])
        for i, (w, pts) in enumerate(by_warm.items()):
            steps = sorted(pts)
            ax.plot(steps, [statistics.fmean(pts[s]) for s in steps], label=w, lw=1.4, ls=DASHES[i % 4])
        ax.set_title(f"depth {d}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ELR spread log10(max/min)")
    axes[0][-1].legend(fontsize=8, title="warm-up", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def layer_heatmap(row: TrialResult, names: list[str], layers: list[dict[str, Any]]) -> bytes:
    """log10 ELR per layer (rows, input at the top) and logged step (columns)."""
    grid = [[math.log10(e) if e > 0 else float("nan") for e in lr["elr"]] for lr in layers]
    fig = Figure(figsize=(7, max(2.5, min(8, 0.08 * len(names) + 2))))
    ax = fig.subplots()
    im = ax.imshow(torch.tensor(grid).T.numpy(), aspect="auto", cmap="viridis", interpolation="nearest",
                   extent=(layers[0]["step"], max(layers[-1]["step"], layers[0]["step"] + 1), len(names) - 0.5, -0.5))
    fig.colorbar(im, ax=ax, label="log10 ELR")
    ax.set_xlabel("step")
    ax.set_ylabel("layer (input at top)")
    ax.set_title(f"{row.trial_id}: {row.outcome}", fontsize=9)
    return _png(fig)


def spread_vs_accuracy(rows: list[TrialResult]) -> bytes:
    """Run-averaged ELR spread against final test accuracy, one point per trial."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    warmups = list(dict.fromkeys(r.warmup for r in rows))
    markers = "osD^v<>pP*"
    depths = sorted({r.depth for r in rows})
    cmap = matplotlib.colormaps["plasma"].resampled(max(2, len(depths)))
    for i, w in enumerate(warmups):
        pts = [r for r in rows if r.warmup == w and r.spread_mean is not None]
        ax.scatter([r.spread_mean for r in pts], [r.final_test_acc if r.final_test_acc is not None else 0.0
                                                  for r in pts],
                   c=[cmap(depths.index(r.depth)) for r in pts], marker=markers[i % len(markers)],
                   label=w, edgecolors="k", linewidths=0.4, s=36)
    for j, d in enumerate(depths):
        ax.scatter([], [], color=cmap(j), label=f"depth {d}", s=20)
    ax.set_xlabel("run-averaged ELR spread log10(max/min)")
    ax.set_ylabel("final test accuracy (diverged: 0)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def predicted_vs_measured(row: TrialResult, layers: list[dict[str, Any]]) -> bytes:
    """Measured ELR spread against the model's prediction from the first logged ELRs:
    E_l(t) = 1/sqrt(E_l(0)^-2 + 2t) (constant learning rate, constant base gradients)."""
    steps = [lr["step"] for lr in layers]
    measured = [elr.spread(torch.tensor(lr["elr"], dtype=torch.float64)).item() for lr in layers]
    e0 = torch.tensor(layers[0]["elr"], dtype=torch.float64)
    e0 = e0[elr.live(e0)]
    t = torch.tensor(steps, dtype=torch.float64) - steps[0]
    predicted = elr.spread(closed_form(e0[None, :], t[:, None])).tolist()
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(steps, measured, label="measured", lw=1.6)
    ax.plot(steps, predicted, "--", label="model from the first logged ELRs", lw=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("ELR spread log10(max/min)")
    ax.set_title(row.trial_id, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def accuracy_by_depth(title: str, depths: list[int], warmups: list[str], cells: dict, threshold: float | None) -> bytes:
    """Final test accuracy against depth, one line per warm-up: the median over seeds with its 95%
    order-statistic interval; the 'trained' threshold dashed."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    for i, w in enumerate(warmups):
        pts = [(d, cells[(d, w)].acc) for d in depths if cells[(d, w)].acc.value is not None]
        lo = [e.value - e.lo if e.has_interval else 0.0 for _, e in pts]
        hi = [e.hi - e.value if e.has_interval else 0.0 for _, e in pts]
        ax.errorbar([d for d, _ in pts], [e.value for _, e in pts], yerr=[lo, hi],
                    label=w, marker=MARKERS[i % 7], capsize=3, lw=1.4, ls=DASHES[i % 4])
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls="--", lw=0.8, label=f"trained >= {threshold:g}")
    _log_depths(ax, depths)
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.set_xlabel("depth")
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="warm-up", title_fontsize=8)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def trained_by_depth(title: str, depths: list[int], warmups: list[str], cells: dict, fits: dict) -> bytes:
    """P(trained) against depth, one colour per warm-up: the fraction over seeds with its 95% Wilson
    band, and the logistic fit whose 0.5 crossing is D50 (dotted line at D50 when the grid brackets it)."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    dense = np.geomspace(min(depths), max(depths), 200)
    for i, w in enumerate(warmups):
        est = [(d, cells[(d, w)].trained_ci) for d in depths if cells[(d, w)].finished]
        if not est:
            continue
        c = colors(i % 10)
        ds = [d for d, _ in est]
        ax.fill_between(ds, [e.lo for _, e in est], [e.hi for _, e in est], color=c, alpha=0.15, lw=0)
        ax.plot(ds, [e.value for _, e in est], ls="none", marker=MARKERS[i % 7], color=c, label=w)
        fit = fits.get(w)
        if fit is not None and fit.value is not None:
            ax.plot(dense, fit.curve(dense), color=c, lw=1.2, ls=DASHES[i % 4])
            if fit.bracketed:
                ax.axvline(fit.value, color=c, lw=0.8, ls=":")
    ax.axhline(0.5, color="gray", lw=0.6, ls="--")
    # where the trials were placed (an adaptive search places them unevenly): the count at each depth
    n = {d: max(cells[(d, w)].finished for w in warmups) for d in depths}
    top = max(n.values(), default=1) or 1
    ax.vlines(depths, -0.16, [-0.16 + 0.1 * n[d] / top for d in depths], color="0.4", lw=2.5)
    for d in depths:
        ax.text(d, -0.045, str(n[d]), fontsize=6, ha="center", va="bottom", color="0.3")
    _log_depths(ax, depths)
    ticks: list[int] = []  # labels at least 0.2 doublings apart (an adaptive search's depths crowd), the last kept
    for d in reversed(depths):
        if not ticks or math.log2(ticks[-1] / d) >= 0.2:
            ticks.append(d)
    ticks.reverse()
    ax.set_xticks(ticks, [str(d) for d in ticks])
    ax.set_xlabel("depth (grey: trials at each depth, the most = full height)")
    ax.set_ylabel("P(trained)")
    ax.set_ylim(-0.17, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="warm-up", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    return _png(fig)


def d50_by_lr(title: str, rows: list) -> bytes:
    """D50 against lr, one colour per warm-up (tables.Trainable rows): the estimate with its 95%
    interval, an arrow where an end lies beyond the grid's depths, a ring at the best lr."""
    fig = Figure(figsize=(6, 3.8))
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    lo_d = min(f.min_depth for r in rows for f in r.by_lr.values())
    hi_d = max(f.max_depth for r in rows for f in r.by_lr.values())
    for i, r in enumerate(rows):
        c = colors(i % 10)
        pts = [(lr, f) for lr, f in sorted(r.by_lr.items()) if f.value is not None]
        if not pts:
            continue
        xs = [lr * (1 + 0.04 * (i - (len(rows) - 1) / 2)) for lr, _ in pts]  # side by side, not on top
        ys = [min(max(f.value, lo_d / 1.5), hi_d * 1.5) for _, f in pts]
        lo = [max(f.lo, lo_d / 1.5) for _, f in pts]
        hi = [min(f.hi, hi_d * 1.5) for _, f in pts]
        ax.errorbar(xs, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]], color=c,
                    marker=MARKERS[i % 7], capsize=3, lw=1.2, ls=DASHES[i % 4], label=r.warmup)
        for x, (_, f) in zip(xs, pts):
            if f.hi > hi_d:
                ax.annotate("", (x, hi_d * 1.5), (x, hi_d * 1.2), arrowprops=dict(arrowstyle="->", color=c))
            if f.lo < lo_d:
                ax.annotate("", (x, lo_d / 1.5), (x, lo_d / 1.2), arrowprops=dict(arrowstyle="->", color=c))
        if r.best.value is not None and r.best.lr is not None:
            j = [lr for lr, _ in pts].index(r.best.lr) if r.best.lr in [lr for lr, _ in pts] else None
            if j is not None:
                ax.plot([xs[j]], [ys[j]], marker="o", ms=12, mfc="none", mec=c, lw=0)
    ax.axhspan(lo_d, hi_d, color="gray", alpha=0.06, lw=0)
    lrs = sorted({lr for r in rows for lr in r.by_lr})
    ax.set_xscale("log")
    ax.set_xlim(lrs[0] / 1.3, lrs[-1] * 1.3)  # from the grid, not the data (which may be empty)
    ax.set_yscale("log", base=2)
    ax.set_ylim(lo_d / 1.6, hi_d * 1.6)
    ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
    ax.minorticks_off()
    ticks = [d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048) if lo_d / 1.5 <= d <= hi_d * 1.5]
    ax.set_yticks(ticks, [str(d) for d in ticks])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("D50 (layers)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="warm-up", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=9)
    return _png(fig)


def trajectory(tr: Trajectory, title: str) -> bytes:
    """A simulated run: every layer's ELR (colour: input to output) and the spread, against step."""
    fig = Figure(figsize=(11, 4))
    ax = fig.subplots(1, 2)
    steps = torch.arange(1, tr.elr.shape[0] + 1).numpy()
    cmap, n = matplotlib.colormaps["viridis"], tr.elr.shape[1]
    for j in range(n):
        ax[0].plot(steps, tr.elr[:, j].numpy(), lw=0.6, color=cmap(j / max(n - 1, 1)))
    ax[0].set(xscale="log", yscale="log", xlabel="step", ylabel="ELR (lr ||g||/||W||)", title="per-layer ELR")
    ax[1].plot(steps, tr.spread.numpy())
    ax[1].set(xscale="log", xlabel="step", ylabel="log10 max/min ELR", title="ELR spread")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)

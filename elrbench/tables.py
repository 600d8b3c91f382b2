"""Trainability by depth from trial results: pure functions from results to grids of cells, and the
Table a grid becomes in the terminal, the report (CSV, Markdown, HTML) and W&B.

A grid holds one group of trials (a workload, optimizer and schedule, and for most tables one
learning rate) with depths as rows and warm-ups as columns; every consumer reads the grid's data,
never a table's title or header text.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Generic, Literal, Optional, TypeVar

from elrbench import stats
from elrbench.result import TrialResult

V = TypeVar("V")


@dataclass(frozen=True)
class Cell:
    """The trials of one (depth, warm-up) cell, over seeds, with 95% intervals (elrbench/stats.py)."""

    n: int  # trials with a result
    trained: int
    diverged: int
    failed: int  # infrastructure failures: they say nothing about trainability and count in no fraction
    accs: tuple[float, ...] = ()  # final test accuracies (trials neither diverged nor failed)

    @property
    def finished(self) -> int:
        return self.n - self.failed

    @property
    def trained_fraction(self) -> float:
        return self.trained / self.finished if self.finished else 0.0

    @cached_property
    def trained_ci(self) -> stats.Estimate:
        """The trained fraction with its Wilson interval."""
        return stats.wilson(self.trained, self.finished)

    @cached_property
    def acc(self) -> stats.Estimate:
        """Median final test accuracy with its order-statistic interval (distribution-free; a mean's
        interval cannot be trusted on the bimodal accuracies near the edge: docs/statistics.md)."""
        return stats.median_ci(self.accs)

    @property
    def acc_mean(self) -> Optional[float]:
        """Mean final test accuracy (a value without interval)."""
        return sum(self.accs) / len(self.accs) if self.accs else None

    def lines(self, compact: bool = False) -> list[str]:
        """The cell as text lines: trained fraction, median accuracy (and the mean), divergences and failures.
        compact: what fits a terminal column of about 20 characters."""
        if not self.n:
            return ["-"]
        t = self.trained_ci
        interval = f" [{t.lo:.2f}, {t.hi:.2f}]" if t.has_interval else ""
        out = [f"{self.trained}/{self.finished}" + ("" if compact else " trained") + interval]
        if self.acc.value is not None:
            out.append(self.acc.text(".3f") if not compact else
                       f"{self.acc.value:.3f}" + (f" [{self.acc.lo:.2f}, {self.acc.hi:.2f}]"
                                                  if self.acc.has_interval else ""))
            if not compact:
                out[-1] = "acc median " + out[-1]
                out.append(f"mean {self.acc_mean:.3f}")
        extra = [f"div {self.diverged}"] * bool(self.diverged) + [f"fail {self.failed}"] * bool(self.failed)
        return out + ([", ".join(extra)] if extra else [])

    def text(self) -> str:
        return "\n".join(self.lines())


def make_cell(rows: Iterable[TrialResult]) -> Cell:
    rows = list(rows)
    return Cell(
        n=len(rows),
        trained=sum(r.outcome == "trained" for r in rows),
        diverged=sum(r.outcome == "diverged" for r in rows),
        failed=sum(r.outcome == "failed" for r in rows),
        accs=tuple(r.final_test_acc for r in rows if r.final_test_acc is not None),
    )


@dataclass(frozen=True)
class Best:
    """A cell at the learning rate where it did best (None: no trial of the cell has a result)."""

    cell: Cell
    lr: Optional[float]


@dataclass(frozen=True)
class Spread:
    """Run-averaged ELR spread of a cell (log10 max/min): the mean over its seeds with Student's t
    interval."""

    early: stats.Estimate  # averaged over the first diagnostics.early_steps of each run
    run: stats.Estimate  # over the whole run
    update: Optional[stats.Estimate] = None  # of the actual relative updates, over the run's log rows
    smooth: Optional[stats.Estimate] = None  # of c_hat smoothed over 5 log periods, over the log rows

    def text(self) -> str:
        extra = [f"{name} {e.text('.2f')}" for name, e in (("updates", self.update), ("smoothed", self.smooth))
                 if e is not None and e.value is not None]
        return "\n".join([("-" if self.early.value is None else self.early.text(".2f")) + " / " + self.run.text(".2f"),
                          *extra])


@dataclass(frozen=True)
class Group:
    """What a grid holds fixed. lr None: the grid spans every learning rate of the study."""

    workload: str
    optimizer: str
    schedule: str
    lr: Optional[float] = None

    @property
    def label(self) -> str:
        """'workload  lr=0.1  sgd  constant' (the lr only when the group has one)."""
        return _label(self, "" if self.lr is None else f"lr={self.lr:g}")

    def holds(self, r: TrialResult) -> bool:
        return ((r.workload, r.optimizer, r.schedule) == (self.workload, self.optimizer, self.schedule)
                and (self.lr is None or r.lr == self.lr))


@dataclass(frozen=True)
class DepthGrid(Generic[V]):
    group: Group
    depths: list[int]
    warmups: list[str]
    cells: dict[tuple[int, str], V]


def groups(rows: Iterable[TrialResult], per_lr: bool) -> dict[Group, list[TrialResult]]:
    """Results by group (per learning rate, or across them), in a stable order."""
    keyed: dict[tuple, list[TrialResult]] = defaultdict(list)  # a Group per key, not per row (100,000: 1 s)
    for r in rows:
        keyed[r.workload, r.optimizer, r.schedule, r.lr if per_lr else None].append(r)
    out = {Group(*k): v for k, v in keyed.items()}
    order = (lambda g: (g.workload, str(g.lr), g.optimizer, g.schedule)) if per_lr else (
        lambda g: (g.workload, g.optimizer, g.schedule))
    return dict(sorted(out.items(), key=lambda kv: order(kv[0])))


def _grid(group: Group, rows: list[TrialResult], value: Callable[[list[TrialResult]], V]) -> DepthGrid[V]:
    depths = sorted({r.depth for r in rows})
    warmups = list(dict.fromkeys(r.warmup for r in rows))
    cells = {(d, w): value([r for r in rows if r.depth == d and r.warmup == w]) for d in depths for w in warmups}
    return DepthGrid(group, depths, warmups, cells)


def by_depth(rows: Iterable[TrialResult]) -> list[DepthGrid[Cell]]:
    """One grid per (workload, lr, optimizer, schedule): the cells over seeds."""
    return [_grid(g, rs, make_cell) for g, rs in groups(rows, per_lr=True).items()]


def _rank(c: Cell) -> tuple:
    # best: highest mean final accuracy, then more trained, then fewer diverged
    return (c.acc_mean if c.acc_mean is not None else -1.0, c.trained_fraction, -c.diverged)


def _best(rows: list[TrialResult]) -> Best:
    per_lr = {lr: make_cell(r for r in rows if r.lr == lr) for lr in sorted({r.lr for r in rows})}
    if not per_lr:
        return Best(make_cell([]), None)
    lr = max(per_lr, key=lambda k: _rank(per_lr[k]))
    return Best(per_lr[lr], lr)


def best_lr(rows: Iterable[TrialResult]) -> list[DepthGrid[Best]]:
    """Per (workload, optimizer, schedule): each (depth, warm-up) cell at its own best learning rate
    (highest mean final test accuracy over seeds), and which learning rate that was."""
    return [_grid(g, rs, _best) for g, rs in groups(rows, per_lr=False).items()]


def failure_boundary(rows: Iterable[TrialResult], majority: float = 0.5) -> list[DepthGrid[Optional[float]]]:
    """Per (workload, optimizer, schedule): for each depth and warm-up, the largest learning rate of
    the grid at which at least `majority` of the finished seeds trained (None: no learning rate did)."""
    def edge(rows: list[TrialResult]) -> Optional[float]:
        ok = [lr for lr in {r.lr for r in rows}
              if (c := make_cell(r for r in rows if r.lr == lr)).finished and c.trained_fraction >= majority]
        return max(ok) if ok else None

    return [_grid(g, rs, edge) for g, rs in groups(rows, per_lr=False).items()]


def spreads(rows: Iterable[TrialResult]) -> list[DepthGrid[Optional[Spread]]]:
    """The grids of by_depth, cells: the run-averaged ELR spread (groups without diagnostics left out)."""
    def spread(rows: list[TrialResult]) -> Optional[Spread]:
        rs = [r for r in rows if r.spread_mean is not None]
        if not rs:
            return None
        more = {k: stats.mean_ci(v) for k, f in (("update", "spread_update_mean"), ("smooth", "spread_smooth_mean"))
                if (v := [getattr(r, f) for r in rs if getattr(r, f) is not None])}
        return Spread(stats.mean_ci([r.spread_early_mean for r in rs if r.spread_early_mean is not None]),
                      stats.mean_ci([r.spread_mean for r in rs]), **more)

    return [_grid(g, rs, spread) for g, rs in groups(rows, per_lr=True).items()
            if any(r.spread_mean is not None for r in rs)]


# ---------------------------------------------------------------- paired comparisons
@dataclass(frozen=True)
class Comparison:
    """A warm-up X against the baseline Y in one (depth) cell, paired by seed: the same seed gives
    the same initialization and data order under every warm-up (tests/test_train.py checks it)."""

    pairs: int  # seeds with an outcome of training under both
    trained: stats.Estimate  # difference of the trained fractions, X - Y (Newcombe's paired interval)
    acc: stats.Estimate  # median over seeds of acc(X) - acc(Y), over the seeds where both have one
    improvement: stats.Estimate  # P(X > Y) on final accuracy (0.5: no preference)

    @property
    def detected(self) -> bool:
        """A difference is called only when an interval excludes 'no difference'."""
        return self.trained.excludes(0.0) or self.acc.excludes(0.0) or self.improvement.excludes(0.5)

    def lines(self) -> list[str]:
        star = lambda e, zero: " *" if e.excludes(zero) else ""  # noqa: E731
        return [f"Δtrained {self.trained.text('.2f', signed=True)}{star(self.trained, 0.0)}",
                f"Δacc {self.acc.text('.3f', signed=True)}{star(self.acc, 0.0)}",
                f"P(X>Y) {self.improvement.text('.2f')}{star(self.improvement, 0.5)}",
                f"{self.pairs} seeds"]


def compare_seeds(xs: list[TrialResult], ys: list[TrialResult]) -> Optional[Comparison]:
    """X's trials against Y's, matched by seed (failed trials left out)."""
    bx = {r.seed: r for r in xs if r.outcome != "failed"}
    by = {r.seed: r for r in ys if r.outcome != "failed"}
    seeds = sorted(set(bx) & set(by))
    if not seeds:
        return None
    tx = [float(bx[s].outcome == "trained") for s in seeds]
    ty = [float(by[s].outcome == "trained") for s in seeds]
    both = [s for s in seeds if bx[s].final_test_acc is not None and by[s].final_test_acc is not None]
    ax, ay = [bx[s].final_test_acc for s in both], [by[s].final_test_acc for s in both]
    return Comparison(len(seeds), stats.paired_fraction_difference(tx, ty), stats.median_difference_ci(ax, ay),
                      stats.prob_improvement_ci(ax, ay))


def paired(rows: Iterable[TrialResult], baseline: str) -> list[DepthGrid[Optional[Comparison]]]:
    """Per (workload, lr, optimizer, schedule) holding the baseline: every other warm-up against it
    at each depth."""
    out = []
    for g, rs in groups(rows, per_lr=True).items():
        warmups = [w for w in dict.fromkeys(r.warmup for r in rs) if w != baseline]
        if baseline not in {r.warmup for r in rs} or not warmups:
            continue
        depths = sorted({r.depth for r in rs})
        cells = {(d, w): compare_seeds([r for r in rs if r.depth == d and r.warmup == w],
                                       [r for r in rs if r.depth == d and r.warmup == baseline])
                 for d in depths for w in warmups}
        out.append(DepthGrid(g, depths, warmups, cells))
    return out


# ---------------------------------------------------------------- the trainable depth
@dataclass(frozen=True)
class Trainable:
    """D50 of one warm-up in one group (workload, optimizer, schedule): at each learning rate, and at
    its best learning rate (the lr with the largest D50, chosen inside the interval: stats.best_depth50),
    with its differences to the baseline's (paired by seed; None for the baseline itself)."""

    warmup: str
    by_lr: dict[float, stats.Depth50]
    diff_by_lr: dict[float, Optional[stats.Estimate]]  # against the baseline at the same lr
    best: stats.Depth50  # at the best lr (best.lr says which); the one D50 when the group has one lr
    difference: Optional[stats.Estimate]  # best against the baseline's best

    @property
    def d50(self) -> stats.Depth50:
        return self.best

    @property
    def lr_at_edge(self) -> bool:
        """The best lr is the smallest or largest of several: the optimum may lie beyond the grid."""
        lrs = sorted(self.by_lr)
        return len(lrs) > 2 and self.best.lr in (lrs[0], lrs[-1])


def _trainable(f: stats.Depth50) -> str:
    return f"trainable to {f.text(' layers')}" if f.value is not None else f"trainable depth {f.text()}"


def _layers(v: float) -> str:
    return f"{v:+.0f}" if math.isfinite(v) else ("-inf" if v < 0 else "+inf")


def difference_text(e: stats.Estimate, x: stats.Depth50, y: stats.Depth50) -> str:
    """'+6 [+2, +9]': the difference of the two printed D50s (each rounded to a layer) with the
    interval rounded outward, so the line never reads 21 and 15 with a difference of +5."""
    value = round(x.value) - round(y.value)
    lo, hi = min(math.floor(e.lo), value), max(math.ceil(e.hi), value)
    return f"{value:+d} [{_layers(lo)}, {_layers(hi)}]"


@dataclass(frozen=True)
class TrainableDepths:
    group: Group
    baseline: Optional[str]  # None: the group has no baseline trials
    lrs: list[float]
    rows: list[Trainable]

    def _name(self, t: Trainable) -> str:
        if len(self.lrs) == 1:
            return t.warmup
        return f"{t.warmup} at its best lr {t.best.lr:g}" if t.best.lr is not None else t.warmup

    def headline(self) -> list[str]:
        """The study's answer, one line per warm-up: with several learning rates, each warm-up at its
        best ('linear at its best lr 0.2: trainable to 21 layers [18, 24]; none at its best lr 0.5:
        15 [12, 17]; difference +6 [+2, +9] (10 seeds; lrs 0.1, 0.2, 0.5)'); with one, the line says
        that the learning rate is not controlled."""
        base = next((t for t in self.rows if t.warmup == self.baseline), None)
        if not self.rows:
            return []
        if all(t.best.value is None and t.best.m is None for t in self.rows):
            return [f"trainable depth: the grid needs two depths or more ({', '.join(t.warmup for t in self.rows)}"
                    f" run at depth {self.rows[0].best.min_depth} only)"]
        if len(self.lrs) == 1:
            prefix = f"at lr {self.lrs[0]:g} only (the learning rate is not controlled): "
            lrs = ""
        else:
            prefix, lrs = "", "; lrs " + ", ".join(f"{lr:g}" for lr in self.lrs)
        lines = []
        for t in self.rows:
            if t is base:
                continue
            line = f"{prefix}{self._name(t)}: {_trainable(t.best)}"
            seeds = f"{t.best.seeds} seeds{lrs}"
            if base is not None:
                line += f"; {self._name(base)}: {base.best.text()}"
                d = t.difference
                if d is None or d.value is None:
                    why = d.why if d is not None and d.why else "the grid does not bracket both"
                    line += f"; difference not estimable: {why} ({seeds})"
                elif not d.has_interval:
                    line += (f"; difference {round(t.best.value) - round(base.best.value):+d}: no interval with "
                             f"{seeds} ({stats.MIN_SEEDS} or more needed)")
                elif d.excludes(0.0):
                    line += f"; difference {difference_text(d, t.best, base.best)} ({seeds})"
                else:
                    line += f"; difference {difference_text(d, t.best, base.best)}: not detectable with {seeds}"
            else:
                line += f" ({seeds})"
            edge = [w for w in (t, base) if w is not None and w.lr_at_edge]
            if edge:
                line += ("; best lr at the edge of the grid for " + ", ".join(w.warmup for w in edge)
                         + ": the optimum may lie beyond it")
            lines.append(line)
        if not lines and base is not None:
            lines.append(f"{prefix}{self._name(base)}: {_trainable(base.best)} ({base.best.seeds} seeds{lrs})")
        return lines


def trainable_depths(rows: Iterable[TrialResult], baseline: str) -> list[TrainableDepths]:
    """Per (workload, optimizer, schedule) and warm-up: D50 at each learning rate over all seeds
    (failed trials left out), D50 at the warm-up's best learning rate, and the differences to the
    baseline's, at each lr and best against best. Every fit of a group searches the same range (the
    group's depths), so that any two can be compared."""
    out = []
    for g, rs in groups(rows, per_lr=False).items():
        done = [r for r in rs if r.outcome != "failed"]
        if not done:
            continue
        lrs = sorted({r.lr for r in done})
        warmups = list(dict.fromkeys(r.warmup for r in done))
        base = baseline if baseline in warmups else None
        rng = stats.span(sorted({r.depth for r in done}))
        fits: dict[str, dict[float, stats.Depth50]] = {}
        for w in warmups:
            fits[w] = {}
            for lr in lrs:
                mine = [r for r in done if r.warmup == w and r.lr == lr]
                if mine:
                    fits[w][lr] = stats.depth50([r.depth for r in mine], [r.outcome == "trained" for r in mine],
                                                len({r.seed for r in mine}), rng, lr=lr)
        items = []
        for w in warmups:
            best = stats.best_depth50(list(fits[w].values()))
            by_diff: dict[float, Optional[stats.Estimate]] = {}
            difference = None
            if base is not None and w != base:
                by_diff = {lr: stats.depth50_difference(f, fits[base][lr]) if lr in fits[base] and f.m is not None
                           and fits[base][lr].m is not None else None for lr, f in fits[w].items()}
                if all(f.m is not None for f in (*fits[w].values(), *fits[base].values())):
                    difference = stats.best_depth50_difference(list(fits[w].values()), list(fits[base].values()))
            items.append(Trainable(w, fits[w], by_diff, best, difference))
        out.append(TrainableDepths(g, base, lrs, items))
    return out


# ---------------------------------------------------------------- tables
Kind = Literal["by_depth", "spread", "best_lr", "boundary", "paired", "d50"]


def _label(g: Group, lr_text: str) -> str:
    return "  ".join(p for p in (g.workload, lr_text, g.optimizer, g.schedule) if p)


# kind -> (the title of a grid's table, the text of a cell)
KINDS: dict[str, tuple[Callable[[Group], str], Callable]] = {
    "by_depth": (lambda g: f"trainability by depth: {g.label}", Cell.text),
    "spread": (lambda g: f"ELR spread, first K steps / whole run: {g.label}",  # + updates, smoothed: run means
               lambda s: "-" if s is None else s.text()),
    "best_lr": (lambda g: f"trainability by depth: {_label(g, 'best lr')}",
                lambda b: b.cell.text() + ("" if b.lr is None else f" @ lr {b.lr:g}")),
    "boundary": (lambda g: f"failure boundary: {g.label}", lambda v: "-" if v is None else f"{v:g}"),
    "paired": (lambda g: f"paired against the baseline: {g.label}",
               lambda c: "-" if c is None else "\n".join(c.lines())),
}


@dataclass(frozen=True)
class Figure:
    """A drawn figure of the report, as the file it was written to (the report and W&B read it)."""

    key: str  # file name
    caption: str
    path: Path


@dataclass(frozen=True)
class Table:
    """Data as text: what the terminal, CSV, Markdown, HTML and W&B show. `data` keeps the data (a
    DepthGrid, or TrainableDepths); a cell may hold several lines."""

    key: str  # file name (a slug of the title)
    kind: Kind
    title: str
    header: list[str]
    rows: list[list[str]]
    data: DepthGrid | TrainableDepths

    @classmethod
    def of(cls, kind: Kind, grid: DepthGrid) -> Table:
        title_of, text = KINDS[kind]
        title = title_of(grid.group)
        header = ["depth", *[f"warm-up: {w}" for w in grid.warmups]]
        rows = [[str(d), *[text(grid.cells[(d, w)]) for w in grid.warmups]] for d in grid.depths]
        return cls(slug(title), kind, title, header, rows, grid)

    @classmethod
    def of_depths(cls, t: TrainableDepths) -> Table:
        """D50 of every warm-up at each learning rate, then at its best one, with the differences to the
        baseline (at the same lr; best against best)."""
        title = f"trainable depth D50 by learning rate: {t.group.label}"
        vs = f"difference to {t.baseline} [95%]" if t.baseline else "difference"

        def diff(e: Optional[stats.Estimate]) -> str:
            if e is None:
                return "-"
            if e.value is None:
                return f"not estimable ({e.why})" if e.why else "-"
            return e.text(".1f", signed=True).replace("inf", "∞") + (" *" if e.excludes(0.0) else "")

        rows = []
        for r in t.rows:
            for lr, f in r.by_lr.items():
                rows.append([r.warmup, f"{lr:g}", f.text(), diff(r.diff_by_lr.get(lr)), str(f.seeds)])
            if len(t.lrs) > 1:
                rows.append([r.warmup, f"best: {r.best.lr:g}" if r.best.lr is not None else "best: -",
                             r.best.text(), diff(r.difference), str(r.best.seeds)])
        return cls(slug(title), "d50", title, ["warm-up", "lr", "D50, layers [95%]", vs, "seeds"], rows, t)

    @property
    def grid(self) -> DepthGrid:
        assert isinstance(self.data, DepthGrid), self.kind
        return self.data


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()

"""Trainability by depth from trial results: pure functions from results to grids of cells, and the
Table a grid becomes in the terminal, the report (CSV, Markdown, HTML) and W&B.

A grid holds one group of trials (a workload, optimizer and schedule, and for most tables one
learning rate) with depths as rows and warm-ups as columns; every consumer reads the grid's data,
never a table's title or header text.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, Optional, TypeVar

from elrbench.result import TrialResult

V = TypeVar("V")


@dataclass(frozen=True)
class Cell:
    """The trials of one (depth, warm-up) cell, over seeds."""

    n: int  # trials with a result
    trained: int
    diverged: int
    failed: int
    acc_mean: float | None  # final test accuracy over the non-diverged, non-failed trials
    acc_std: float | None

    @property
    def trained_fraction(self) -> float:
        return self.trained / self.n if self.n else 0.0

    def text(self) -> str:
        if not self.n:
            return "-"
        acc = "n/a" if self.acc_mean is None else f"{self.acc_mean:.3f}" + (
            f"±{self.acc_std:.3f}" if self.acc_std is not None else "")
        extra = (f" div {self.diverged}" if self.diverged else "") + (f" fail {self.failed}" if self.failed else "")
        return f"{acc} ({self.trained}/{self.n} trained{extra})"


def make_cell(rows: Iterable[TrialResult]) -> Cell:
    rows = list(rows)
    accs = [r.final_test_acc for r in rows if r.final_test_acc is not None]
    return Cell(
        n=len(rows),
        trained=sum(r.outcome == "trained" for r in rows),
        diverged=sum(r.outcome == "diverged" for r in rows),
        failed=sum(r.outcome == "failed" for r in rows),
        acc_mean=statistics.fmean(accs) if accs else None,
        acc_std=statistics.stdev(accs) if len(accs) > 1 else None,
    )


@dataclass(frozen=True)
class Best:
    """A cell at the learning rate where it did best (None: no trial of the cell has a result)."""

    cell: Cell
    lr: Optional[float]


@dataclass(frozen=True)
class Spread:
    """Run-averaged ELR spread of a cell, mean over its seeds (log10 max/min)."""

    early: Optional[float]  # over the first diagnostics.early_steps
    run: float  # over the whole run


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
    out: dict[Group, list[TrialResult]] = defaultdict(list)
    for r in rows:
        out[Group(r.workload, r.optimizer, r.schedule, r.lr if per_lr else None)].append(r)
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
              if (c := make_cell(r for r in rows if r.lr == lr)).n and c.trained / c.n >= majority]
        return max(ok) if ok else None

    return [_grid(g, rs, edge) for g, rs in groups(rows, per_lr=False).items()]


def spreads(rows: Iterable[TrialResult]) -> list[DepthGrid[Optional[Spread]]]:
    """The grids of by_depth, cells: the run-averaged ELR spread (groups without diagnostics left out)."""
    def spread(rows: list[TrialResult]) -> Optional[Spread]:
        rs = [r for r in rows if r.spread_mean is not None]
        if not rs:
            return None
        early = [r.spread_early_mean for r in rs if r.spread_early_mean is not None]
        return Spread(statistics.fmean(early) if early else None, statistics.fmean(r.spread_mean for r in rs))

    return [_grid(g, rs, spread) for g, rs in groups(rows, per_lr=True).items()
            if any(r.spread_mean is not None for r in rs)]


# ---------------------------------------------------------------- tables
Kind = Literal["by_depth", "spread", "best_lr", "boundary"]


def _label(g: Group, lr_text: str) -> str:
    return "  ".join(p for p in (g.workload, lr_text, g.optimizer, g.schedule) if p)


# kind -> (the title of a grid's table, the text of a cell)
KINDS: dict[str, tuple[Callable[[Group], str], Callable]] = {
    "by_depth": (lambda g: f"trainability by depth: {g.label}", Cell.text),
    "spread": (lambda g: f"ELR spread, first K steps / whole run: {g.label}",
               lambda s: "-" if s is None else ("- / " if s.early is None else f"{s.early:.2f} / ") + f"{s.run:.2f}"),
    "best_lr": (lambda g: f"trainability by depth: {_label(g, 'best lr')}",
                lambda b: b.cell.text() + ("" if b.lr is None else f" @ lr {b.lr:g}")),
    "boundary": (lambda g: f"failure boundary: {g.label}", lambda v: "-" if v is None else f"{v:g}"),
}


@dataclass(frozen=True)
class Table:
    """A grid as text: what the terminal, CSV, Markdown, HTML and W&B show. `grid` keeps the data."""

    key: str  # file name (a slug of the title)
    kind: Kind
    title: str
    header: list[str]
    rows: list[list[str]]
    grid: DepthGrid

    @classmethod
    def of(cls, kind: Kind, grid: DepthGrid) -> Table:
        title_of, text = KINDS[kind]
        title = title_of(grid.group)
        header = ["depth", *[f"warm-up: {w}" for w in grid.warmups]]
        rows = [[str(d), *[text(grid.cells[(d, w)]) for w in grid.warmups]] for d in grid.depths]
        return cls(slug(title), kind, title, header, rows, grid)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()

"""Trainability by depth from result rows (pure functions; rendering lives in the CLI)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Cell:
    n: int  # trials finished in this cell (over seeds)
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
        extra = "".join([f" div {self.diverged}" if self.diverged else "", f" fail {self.failed}" if self.failed else ""])
        return f"{acc} ({self.trained}/{self.n} trained{extra})"


@dataclass(frozen=True)
class DepthTable:
    title: str  # workload and the fixed grid values of this table
    depths: list[int]
    warmups: list[str]
    cells: dict[tuple[int, str], Cell]


def make_cell(rows: list[dict[str, Any]]) -> Cell:
    accs = [r["final_test_acc"] for r in rows if r.get("final_test_acc") is not None]
    return Cell(
        n=len(rows),
        trained=sum(r["outcome"] == "trained" for r in rows),
        diverged=sum(r["outcome"] == "diverged" for r in rows),
        failed=sum(r["outcome"] == "failed" for r in rows),
        acc_mean=statistics.fmean(accs) if accs else None,
        acc_std=statistics.stdev(accs) if len(accs) > 1 else None,
    )


def by_depth(rows: Iterable[dict[str, Any]]) -> list[DepthTable]:
    """One table per (workload, lr, optimizer, schedule): rows depth, columns warm-up, cells over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["workload"], r["lr"], r["optimizer"], r["schedule"])].append(r)
    tables = []
    for (workload, lr, opt, sched), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        depths = sorted({r["depth"] for r in rs})
        warmups = list(dict.fromkeys(r["warmup"] for r in rs))
        cells = {}
        for d in depths:
            for w in warmups:
                cells[(d, w)] = make_cell([r for r in rs if r["depth"] == d and r["warmup"] == w])
        tables.append(DepthTable(f"{workload}  lr={lr:g}  {opt}  {sched}", depths, warmups, cells))
    return tables


# ---------------------------------------------------------------- across learning rates
def _groups(rows: Iterable[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["workload"], r["optimizer"], r["schedule"])].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


def _rank(c: Cell) -> tuple:
    # best: highest mean final accuracy, then more trained, then fewer diverged
    return (c.acc_mean if c.acc_mean is not None else -1.0, c.trained_fraction, -c.diverged)


def best_lr(rows: Iterable[dict[str, Any]]) -> list[tuple[DepthTable, dict[tuple[int, str], float]]]:
    """Per (workload, optimizer, schedule): each (depth, warm-up) cell at its own best learning rate
    (highest mean final test accuracy over seeds), and which learning rate that was."""
    out = []
    for (workload, opt, sched), rs in _groups(rows).items():
        depths = sorted({r["depth"] for r in rs})
        warmups = list(dict.fromkeys(r["warmup"] for r in rs))
        cells, chosen = {}, {}
        for d in depths:
            for w in warmups:
                per_lr = {lr: make_cell([r for r in rs if r["depth"] == d and r["warmup"] == w and r["lr"] == lr])
                          for lr in sorted({r["lr"] for r in rs})}
                per_lr = {lr: c for lr, c in per_lr.items() if c.n}
                if per_lr:
                    lr = max(per_lr, key=lambda k: _rank(per_lr[k]))
                    cells[(d, w)], chosen[(d, w)] = per_lr[lr], lr
                else:
                    cells[(d, w)] = make_cell([])
        out.append((DepthTable(f"{workload}  best lr  {opt}  {sched}", depths, warmups, cells), chosen))
    return out


def failure_boundary(rows: Iterable[dict[str, Any]], majority: float = 0.5) -> list[tuple[str, list[int], list[str],
                                                                                         dict[tuple[int, str], float | None]]]:
    """Per (workload, optimizer, schedule): for each depth and warm-up, the largest learning rate of
    the grid at which at least `majority` of the finished seeds trained (None: no learning rate did)."""
    out = []
    for (workload, opt, sched), rs in _groups(rows).items():
        depths = sorted({r["depth"] for r in rs})
        warmups = list(dict.fromkeys(r["warmup"] for r in rs))
        edge: dict[tuple[int, str], float | None] = {}
        for d in depths:
            for w in warmups:
                ok = [lr for lr in {r["lr"] for r in rs if r["depth"] == d and r["warmup"] == w}
                      if (c := make_cell([r for r in rs if r["depth"] == d and r["warmup"] == w and r["lr"] == lr])).n
                      and c.trained / c.n >= majority]
                edge[(d, w)] = max(ok) if ok else None
        out.append((f"{workload}  {opt}  {sched}", depths, warmups, edge))
    return out


def table_rows(t: DepthTable, chosen: dict[tuple[int, str], float] | None = None) -> list[list[str]]:
    """A depth table as text rows (header first), for CSV, Markdown and HTML alike."""
    head = ["depth", *[f"warm-up: {w}" for w in t.warmups]]
    body = []
    for d in t.depths:
        cells = []
        for w in t.warmups:
            text = t.cells[(d, w)].text()
            if chosen and (d, w) in chosen:
                text += f" @ lr {chosen[(d, w)]:g}"
            cells.append(text)
        body.append([str(d), *cells])
    return [head, *body]


def boundary_rows(depths: list[int], warmups: list[str], edge: dict[tuple[int, str], float | None]) -> list[list[str]]:
    return [["depth", *[f"warm-up: {w}" for w in warmups]],
            *[[str(d), *["-" if edge[(d, w)] is None else f"{edge[(d, w)]:g}" for w in warmups]] for d in depths]]


def spread_rows(t: DepthTable, rows: list[dict[str, Any]]) -> list[list[str]]:
    """The same grid as a depth table, cells: run-averaged ELR spread over the first K steps and over
    the run (mean over seeds, log10 max/min)."""
    def cell(d: int, w: str) -> str:
        rs = [r for r in rows if r["depth"] == d and r["warmup"] == w and r.get("spread_mean") is not None]
        if not rs:
            return "-"
        early = [r["spread_early_mean"] for r in rs if r.get("spread_early_mean") is not None]
        return (f"{statistics.fmean(early):.2f} / " if early else "- / ") + f"{statistics.fmean(r['spread_mean'] for r in rs):.2f}"

    return [["depth", *[f"warm-up: {w}" for w in t.warmups]],
            *[[str(d), *[cell(d, w) for w in t.warmups]] for d in t.depths]]

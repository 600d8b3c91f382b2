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

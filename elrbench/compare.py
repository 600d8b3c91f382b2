"""One grid run twice (two machines, two versions, a laptop and a cluster): per-cell differences with
intervals, and whether the two runs' verdicts agree. Trials are matched by grid point (workload,
depth, lr, optimizer, warm-up, schedule, seed), so the same seed is compared with itself (a paired
comparison), also when the runs differ in how a trial runs (resources.compile, workers_per_trial),
which changes trial ids."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from elrbench import stats
from elrbench.result import POINT, TrialResult
from elrbench.tables import Group, Trainable, TrainableDepths, groups, make_cell, trainable_depths


@dataclass(frozen=True)
class CellDiff:
    """One (group, depth, warm-up) cell in A and in B, and B - A over the trials both have."""

    group: Group
    depth: int
    warmup: str
    a: str  # 'trained/finished' of A
    b: str
    pairs: int  # trials of the cell with an outcome of training in both
    trained: stats.Estimate  # difference of trained fractions, B - A, paired by trial
    acc: stats.Estimate  # median of acc(B) - acc(A) over the trials with one in both

    @property
    def differs(self) -> bool:
        return self.trained.excludes(0.0) or self.acc.excludes(0.0)


def verdict(t: Trainable) -> str:
    """What a run says of a warm-up against the baseline, as a word that two runs can agree on."""
    if t.difference is None or t.difference.value is None:
        return "not estimable"
    if not t.difference.has_interval:
        return "no interval"
    if t.difference.excludes(0.0):
        return "better" if t.difference.value > 0 else "worse"
    return "no difference detected"


@dataclass(frozen=True)
class VerdictPair:
    group: Group
    warmup: str
    a: Trainable
    b: Trainable

    @property
    def agree(self) -> bool:
        return verdict(self.a) == verdict(self.b)


@dataclass(frozen=True)
class Comparison:
    common: int  # grid points with a result in both
    only_a: int
    only_b: int
    other_ids: int  # common points whose trial ids differ (another identity: compiled, DDP, ...)
    cells: list[CellDiff]
    verdicts: list[VerdictPair]

    @property
    def agree(self) -> bool:
        return all(v.agree for v in self.verdicts)


def compare(rows_a: list[TrialResult], rows_b: list[TrialResult], baseline: str) -> Comparison:
    a = {point(r): r for r in rows_a}
    b = {point(r): r for r in rows_b}
    common = sorted(set(a) & set(b), key=lambda k: a[k].index)
    ra, rb = [a[k] for k in common], [b[k] for k in common]
    cells = []
    for g, rs in groups(ra, per_lr=True).items():
        for d in sorted({r.depth for r in rs}):
            for w in dict.fromkeys(r.warmup for r in rs):
                keys = [point(r) for r in rs if r.depth == d and r.warmup == w]
                cells.append(_cell(g, d, w, [a[k] for k in keys], [b[k] for k in keys]))
    da = {t.group: t for t in trainable_depths(ra, baseline)}
    db = {t.group: t for t in trainable_depths(rb, baseline)}
    verdicts = [VerdictPair(g, x.warmup, x, y) for g, t in da.items() if g in db and t.baseline
                for x, y in zip(t.rows, _aligned(t, db[g])) if x.warmup != t.baseline and y is not None]
    other = sum(a[k].trial_id != b[k].trial_id for k in common)
    return Comparison(len(common), len(set(a) - set(b)), len(set(b) - set(a)), other, cells, verdicts)


def point(r: TrialResult) -> tuple:
    """The trial's grid point: what pairs a trial of one run with its twin in the other."""
    return tuple(getattr(r, k) for k in POINT)


def _aligned(t: TrainableDepths, other: TrainableDepths) -> list[Optional[Trainable]]:
    by = {r.warmup: r for r in other.rows}
    return [by.get(r.warmup) for r in t.rows]


def _cell(g: Group, depth: int, warmup: str, xa: list[TrialResult], xb: list[TrialResult]) -> CellDiff:
    ca, cb = make_cell(xa), make_cell(xb)
    both = [(p, q) for p, q in zip(xa, xb) if p.outcome != "failed" and q.outcome != "failed"]
    ta = [float(p.outcome == "trained") for p, _ in both]
    tb = [float(q.outcome == "trained") for _, q in both]
    accs = [(p.final_test_acc, q.final_test_acc) for p, q in both
            if p.final_test_acc is not None and q.final_test_acc is not None]
    return CellDiff(g, depth, warmup, f"{ca.trained}/{ca.finished}", f"{cb.trained}/{cb.finished}", len(both),
                    stats.paired_fraction_difference(tb, ta),
                    stats.median_difference_ci([q for _, q in accs], [p for p, _ in accs]))

"""Trainability tables from results: cells with intervals, paired comparisons, D50 and its headline."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from elrbench import stats
from elrbench.tables import Table, by_depth, paired, trainable_depths
from tests.conftest import result_row as _row


def test_by_depth_cells():
    rows = [_row(4, "none", 0, "trained", 0.9), _row(4, "none", 1, "untrained", 0.7),
            _row(4, "linear", 0, "trained", 0.95), _row(8, "none", 0, "diverged", None),
            _row(8, "none", 1, "untrained", 0.5), _row(8, "linear", 0, "failed", None)]
    (t,) = by_depth(rows)
    assert t.depths == [4, 8] and t.warmups == ["none", "linear"]
    c = t.cells[(4, "none")]
    assert (c.n, c.trained, c.finished, c.acc_mean) == (2, 1, 2, pytest.approx(0.8))
    assert (c.trained_ci.lo, c.trained_ci.hi) == (stats.wilson(1, 2).lo, stats.wilson(1, 2).hi)
    assert not c.acc.has_interval  # two seeds: no bootstrap interval
    d = t.cells[(8, "none")]
    assert (d.n, d.trained, d.diverged, d.acc_mean) == (2, 0, 1, 0.5)
    assert "div 1" in d.text()
    f = t.cells[(8, "linear")]
    assert f.failed == 1 and f.finished == 0 and f.acc_mean is None and f.lines() == ["0/0 trained", "fail 1"]
    # every compact line fits a terminal column
    assert all(len(line) <= 20 for c in t.cells.values() for line in c.lines(compact=True))


def _depth_study(d50: dict[str, float], seeds: int, depths=(4, 8, 16, 32, 64), seed=0):
    """Outcomes drawn from a logistic boundary per warm-up; every seed shares a 'luck' term across
    warm-ups (what pairing by seed cancels)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        luck = rng.normal(0, 0.5)
        for d in depths:
            u = rng.random()
            for w, m in d50.items():
                p = 1 / (1 + math.exp(3 * (math.log2(d) - math.log2(m)) - luck))
                trained = u < p
                acc = 0.5 + 0.4 * p + 0.02 * luck
                rows.append(_row(d, w, s, "trained" if trained else "untrained", acc))
    return rows


def test_paired_comparisons_and_the_headline():
    rows = _depth_study({"none": 12.0, "linear": 40.0}, seeds=12)
    (grid,) = paired(rows, "none")
    assert grid.warmups == ["linear"]
    c = grid.cells[(16, "linear")]
    assert c.pairs == 12 and c.acc.excludes(0.0) and c.acc.value > 0 and c.improvement.value == 1.0
    assert c.detected and any(line.endswith("*") for line in c.lines())
    (t,) = trainable_depths(rows, "none")
    lin = next(r for r in t.rows if r.warmup == "linear")
    assert lin.d50.bracketed and lin.difference.excludes(0.0) and lin.difference.value > 0
    (line,) = t.headline()
    # one learning rate: the line says so, and compares the warm-ups at it
    assert line.startswith("at lr 0.1 only (the learning rate is not controlled): linear: trainable to ")
    assert "; none: " in line and "difference +" in line and "not detectable" not in line
    table = Table.of_depths(t)
    assert table.kind == "d50" and table.header[3] == "difference to none [95%]" and table.rows[1][3].endswith(" *")


def test_no_difference_is_called_when_there_is_none():
    rows = _depth_study({"none": 16.0, "same": 16.0}, seeds=8, seed=3)
    (t,) = trainable_depths(rows, "none")
    same = next(r for r in t.rows if r.warmup == "same")
    assert same.difference.value == 0.0 and not same.difference.excludes(0.0)
    assert "not detectable with 8 seeds" in t.headline()[0]
    few = trainable_depths(_depth_study({"none": 16.0, "lin": 40.0}, seeds=3), "none")[0]
    assert "no interval with 3 seeds (5 or more needed)" in few.headline()[0]
    flat = [_row(d, w, s, "trained" if s % 2 else "untrained", 0.5) for d in (4, 8, 16, 32) for s in range(10)
            for w in ("none", "lin")]
    line = trainable_depths(flat, "none")[0].headline()[0]
    assert "lin: trainable depth not identified (P(trained) does not fall with depth: 5/10 trained at depth 4" in line
    assert "difference not estimable: the grid does not bracket both" in line
    # without the baseline in the study, D50 alone
    alone = trainable_depths([r for r in rows if r.warmup == "same"], "none")[0]
    assert alone.baseline is None and "same: trainable to " in alone.headline()[0]


def _lr_study(d50: dict[tuple[str, float], float], seeds: int, depths=(4, 8, 16, 24, 32), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for d in depths:
            u = rng.random()
            for (w, lr), m in d50.items():
                p = 1 / (1 + math.exp(8 * (math.log2(d) - math.log2(m))))
                rows.append(_row(d, w, s, "trained" if u < p else "untrained", 0.5 + 0.4 * p, lr=lr))
    return rows


def test_the_verdict_compares_warm_ups_at_their_best_learning_rates():
    # the baseline peaks at the middle lr, the warm-up at the largest: each is judged at its own best
    truth = {("none", 0.1): 10.0, ("none", 0.2): 14.0, ("none", 0.5): 11.0,
             ("lin", 0.1): 11.0, ("lin", 0.2): 13.0, ("lin", 0.5): 22.0}
    (t,) = trainable_depths(_lr_study(truth, seeds=10), "none")
    assert t.lrs == [0.1, 0.2, 0.5] and t.group.lr is None
    lin = next(r for r in t.rows if r.warmup == "lin")
    none = next(r for r in t.rows if r.warmup == "none")
    assert (none.best.lr, lin.best.lr) == (0.2, 0.5)
    assert lin.best.value == max(f.value for f in lin.by_lr.values())
    (line,) = t.headline()
    assert line.startswith("lin at its best lr 0.5: trainable to ") and "; none at its best lr 0.2: " in line
    assert "10 seeds; lrs 0.1, 0.2, 0.5" in line and "not controlled" not in line
    assert "best lr at the edge of the grid for lin" in line  # 0.5 is the largest lr tried
    # the printed difference is the difference of the printed D50s
    a = int(re.search(r"trainable to (\d+) layers", line).group(1))
    b = int(re.search(r"none at its best lr 0.2: (\d+) ", line).group(1))
    assert re.search(r"difference ([+-]\d+) \[", line).group(1) == f"{a - b:+d}"
    table = Table.of_depths(t)
    assert [r[1] for r in table.rows] == ["0.1", "0.2", "0.5", "best: 0.2", "0.1", "0.2", "0.5", "best: 0.5"]


def test_printed_differences_agree_with_printed_depths():
    for seed in range(12):
        truth = {("none", 0.1): 12.0 + seed / 3, ("lin", 0.1): 17.0 + seed / 2}
        (t,) = trainable_depths(_lr_study(truth, seeds=6, seed=seed), "none")
        line = t.headline()[0]
        m = re.search(r"lin: trainable to (\d+) layers .*none: (\d+) .*difference ([+-]\d+)", line)
        if m:
            assert int(m.group(3)) == int(m.group(1)) - int(m.group(2)), line

"""The statistics against hand-computed values and small simulations with a known truth, and the
degenerate cases that printed wrong certainty before (zero-width intervals, D50 from flat data).
The full coverage table is benchmarks/coverage.py's; these are its fast, pinned corners."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from elrbench import stats

Z = sps.norm.ppf(0.975)
DEPTHS = [4, 8, 16, 24, 32]


def test_wilson_interval_by_hand():
    for k, n in [(0, 5), (3, 10), (10, 10), (1, 1), (17, 40)]:
        e = stats.wilson(k, n)
        centre = (k + Z * Z / 2) / (n + Z * Z)
        half = Z / (n + Z * Z) * math.sqrt(k * (n - k) / n + Z * Z / 4)
        assert e.value == k / n and e.n == n
        assert e.lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert e.hi == pytest.approx(min(1.0, centre + half), abs=1e-12)
    # the ends are exact at 0/n and n/n, so a true fraction of 1e-20 is inside [0, ...]
    assert stats.wilson(0, 10).lo == 0.0 and stats.wilson(10, 10).hi == 1.0
    assert stats.wilson(0, 0).value is None


def test_newcombe_paired_difference_by_hand_and_never_zero_width():
    x = [1, 1, 1, 0, 1, 0, 1, 1, 0, 1]
    y = [1, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    e = stats.paired_fraction_difference(x, y)
    # the 2x2 table: both 4, x only 3, y only 0, neither 3; Newcombe (1998) method 10 by hand
    a, b, c, d, n = 4, 3, 0, 3, 10
    p1, p2 = 0.7, 0.4
    l1, u1 = stats.wilson(7, 10).lo, stats.wilson(7, 10).hi
    l2, u2 = stats.wilson(4, 10).lo, stats.wilson(4, 10).hi
    phi = max(a * d - b * c - n / 2, 0) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    lo = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = p1 - p2 + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    assert e.value == pytest.approx(0.3) and e.lo == pytest.approx(lo) and e.hi == pytest.approx(hi)
    # both warm-ups train on all 10 seeds: about +-0.28, never [0, 0] (the old paired bootstrap's answer)
    same = stats.paired_fraction_difference([1] * 10, [1] * 10)
    assert same.value == 0.0
    assert same.lo == pytest.approx(-0.278, abs=0.01) and same.hi == pytest.approx(0.278, abs=0.01)
    assert stats.paired_fraction_difference([0] * 10, [0] * 10).hi > 0.25


def test_newcombe_covers_correlated_pairs():
    rng = np.random.default_rng(4)
    for px, py, n in [(0.9, 0.6, 10), (0.5, 0.5, 10), (0.95, 0.95, 20), (0.3, 0.1, 5)]:
        u = rng.standard_normal((2000, n))
        zx = np.sqrt(0.5) * u + np.sqrt(0.5) * rng.standard_normal((2000, n))
        zy = np.sqrt(0.5) * u + np.sqrt(0.5) * rng.standard_normal((2000, n))
        x, y = sps.norm.cdf(zx) < px, sps.norm.cdf(zy) < py
        table = np.stack([(x & y).sum(1), (x & ~y).sum(1), (~x & y).sum(1), (~x & ~y).sum(1)], axis=1)
        lo, hi = stats.newcombe_paired_bounds(table)
        assert ((lo <= px - py) & (px - py <= hi)).mean() >= 0.93, (px, py, n)
        assert np.all(hi > lo)


def test_median_interval_is_the_order_statistics_and_exact():
    e = stats.median_ci(list(range(10)))
    assert (e.value, e.lo, e.hi) == (4.5, 1.0, 8.0)  # x_(2), x_(9): 1 - 2 P(B <= 1) = 97.9%
    e20 = stats.median_ci(list(range(20)))
    assert (e20.lo, e20.hi) == (5.0, 14.0)  # x_(6), x_(15): 95.9%
    assert not stats.median_ci([0.1, 0.2, 0.3, 0.4, 0.5]).has_interval  # 5 seeds: only 93.75% possible
    flat = stats.median_ci([0.8] * 8)
    assert flat.value == 0.8 and not flat.has_interval and flat.why == "every seed gave the same value"
    # coverage on a bimodal distribution with a rare failure mode (what sinks a mean's t interval)
    rng = np.random.default_rng(0)
    draws = np.where(rng.random((3000, 10)) < 0.1, rng.uniform(0.1, 0.5, (3000, 10)),
                     rng.normal(0.95, 0.01, (3000, 10)))
    truth = np.median(np.where(rng.random(400_000) < 0.1, rng.uniform(0.1, 0.5, 400_000),
                               rng.normal(0.95, 0.01, 400_000)))
    covered = [stats.median_ci(list(d)).lo <= truth <= stats.median_ci(list(d)).hi for d in draws[:600]]
    assert np.mean(covered) >= 0.95
    d = stats.median_difference_ci([0.9, 0.8, 0.7, 0.95, 0.85, 0.6], [0.8, 0.8, 0.6, 0.9, 0.8, 0.5])
    assert d.value == pytest.approx(np.median([0.1, 0.0, 0.1, 0.05, 0.05, 0.1]))


def test_t_intervals_by_hand():
    x = np.array([0.1, 0.5, 0.55, 0.6, 0.62, 0.7, 0.9, 0.99])
    e = stats.mean_ci(x)
    half = sps.t.ppf(0.975, 7) * x.std(ddof=1) / math.sqrt(8)
    assert e.value == pytest.approx(x.mean()) and e.hi - e.value == pytest.approx(half)
    assert not stats.mean_ci([0.1, 0.9, 0.5, 0.4]).has_interval  # fewer than 5 seeds
    assert not stats.mean_ci([0.8] * 6).has_interval  # no zero-width interval
    p = stats.mean_difference_ci([1.0, 2.0, 3.0, 4.0, 6.0], [1.0, 1.0, 2.0, 2.0, 3.0])
    assert p.value == pytest.approx(1.4)
    assert stats.iqm(x) == pytest.approx(np.mean([0.55, 0.6, 0.62, 0.7]))  # the middle half


def test_probability_of_improvement():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0])
    # pairs of different seeds: (1,2) (1,4) (2,0) (2,4) (3,0) (3,2): wins 3 of 6
    assert stats.prob_improvement(x, y) == pytest.approx(3 / 6)
    sep = stats.prob_improvement_ci([0.9] * 3 + [0.91, 0.92], [0.2, 0.3, 0.25, 0.1, 0.2])
    assert sep.value == 1.0 and sep.hi == 1.0 and 0.3 < sep.lo < 0.9  # separation: not [1, 1]
    # coverage of the score interval on paired, correlated runs (truth by Monte Carlo)
    rng = np.random.default_rng(2)
    u = rng.standard_normal((1000, 10))
    xs, ys = 0.3 + u + rng.standard_normal((1000, 10)), u + rng.standard_normal((1000, 10))
    truth = sps.norm.cdf(0.3 / math.sqrt(4))  # X - Y' of independent draws: N(0.3, 4)
    cov = np.mean([(e := stats.prob_improvement_ci(a, b)).lo <= truth <= e.hi for a, b in zip(xs[:400], ys[:400])])
    assert cov >= 0.93


def _study(rng, true_d50: float, slope: float, depths, seeds: int):
    ds, tr = [], []
    for d in depths:
        p = 1 / (1 + math.exp(-slope * (math.log2(d) - math.log2(true_d50))))
        for _ in range(seeds):
            ds.append(d)
            tr.append(bool(rng.random() < p))
    return ds, tr


def test_d50_interval_covers_the_truth():
    # 200 simulated studies with a known boundary: the 95% interval covers it at least 93% of the time
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        ds, tr = _study(rng, 20.0, -3.0, [4, 8, 16, 32, 64], 10)
        fit = stats.depth50(ds, tr, 10)
        covered += fit.lo <= 20.0 <= fit.hi
    assert covered >= 186, covered


def test_d50_of_a_steep_edge_just_above_a_depth():
    # the slope penalty of the old fit covered 51% here: steep, and the truth just above depth 16
    rng = np.random.default_rng(3)
    covered = sum(stats.depth50(*_study(rng, 17.0, -30.0, DEPTHS, 10), 10).lo <= 17.0 for _ in range(100))
    assert covered >= 93


def test_separation_gives_every_value_the_data_cannot_tell_apart():
    ds = DEPTHS * 10
    one = stats.depth50(ds, [d <= 16 for d in ds], 10)  # 10/10 at 16, 0/10 at 24
    assert one.lo <= 16 + 1e-9 and one.hi >= 24 and 16 < one.value < 24  # the old fit: 20 [17, 22]
    assert one.text() == "20 [16, 24]"
    other = stats.depth50(ds, [d <= 8 for d in ds], 10)
    diff = stats.depth50_difference(one, other)
    # any difference in (0, 16) fits: never the old +8 [+8, +8]
    assert diff.lo <= 1 and diff.hi >= 15 and diff.hi - diff.lo > 10


def test_flat_or_rising_trained_fraction_is_not_identified():
    ds = DEPTHS * 10
    flat = stats.depth50(ds, [i % 2 == 0 for i in range(len(ds))], 10)
    assert flat.value is None and "does not fall with depth" in flat.why
    assert flat.text().startswith("not identified (P(trained) does not fall with depth")
    rising = stats.depth50(ds, [i % 2 == 0 or d == 32 for i, d in enumerate(ds)], 10)
    assert rising.value is None  # the old fit said "trainable to < 4 layers [< 4, > 32]"
    # trains from 16 on, to the deepest: read on the descending limb (below), D50 lies beyond the grid
    assert stats.depth50(ds, [d >= 16 for d in ds], 10).above
    # a net too shallow to reach the threshold: D50 is read on the descending limb
    limb = stats.depth50(ds, [(d in (8, 16)) for d in ds], 10)
    assert limb.bracketed and 16 <= limb.value <= 24


def test_censoring():
    all_train = stats.depth50([4, 8, 16] * 5, [True] * 15, 5)
    assert all_train.above and not all_train.bracketed and all_train.text().startswith("> 16")
    none_train = stats.depth50([4, 8, 16] * 5, [False] * 15, 5)
    assert none_train.below and none_train.text().startswith("< 4")
    assert stats.depth50([8] * 5, [True, False] * 2 + [True], 5).value is None


def test_d50_difference_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(5)
    depths = [4, 8, 16, 32, 64]
    rng_m = stats.span(depths)
    x = stats.depth50(*_study(rng, 32.0, -3.0, depths, 20), 20, rng_m)
    y = stats.depth50(*_study(rng, 16.0, -3.0, depths, 20), 20, rng_m)
    diff = stats.depth50_difference(x, y)
    assert diff.value == pytest.approx(x.value - y.value)  # the difference of the two estimates, exactly
    assert diff.excludes(0.0) and diff.lo < 16 < diff.hi
    same = stats.depth50_difference(y, y)
    assert same.value == 0.0 and not same.excludes(0.0)
    with pytest.raises(ValueError):
        stats.depth50_difference(x, stats.depth50(*_study(rng, 16.0, -3.0, [4, 8, 16], 20), 20))


def test_best_lr_d50_holds_the_choice_of_lr():
    rng = np.random.default_rng(8)
    rng_m = stats.span(DEPTHS)
    fits = [stats.depth50(*_study(rng, d, -6.0, DEPTHS, 10), 10, rng_m, lr=lr)
            for d, lr in ((12.0, 0.1), (16.0, 0.2), (22.0, 0.5))]
    best = stats.best_depth50(fits)
    assert best.lr == max(fits, key=lambda f: f.value).lr and best.value == max(f.value for f in fits)
    # the interval is wider than the chosen lr's own (the choice is inside it), and ends at the max
    own = next(f for f in fits if f.lr == best.lr)
    assert best.hi >= own.hi and best.lo <= best.value <= best.hi
    assert stats.best_depth50([own]) is own
    ys = [stats.depth50(*_study(rng, d, -6.0, DEPTHS, 10), 10, rng_m, lr=lr)
          for d, lr in ((10.0, 0.1), (14.0, 0.2), (12.0, 0.5))]
    diff = stats.best_depth50_difference(fits, ys)
    assert diff.value == pytest.approx(best.value - stats.best_depth50(ys).value)
    assert diff.lo <= diff.value <= diff.hi

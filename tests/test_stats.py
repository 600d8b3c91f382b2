"""The statistics against hand-computed values and scipy references, and D50 against simulated
studies whose boundary is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from elrbench import stats

Z = sps.norm.ppf(0.975)


def test_wilson_interval_by_hand():
    for k, n in [(0, 5), (3, 10), (10, 10), (1, 1), (17, 40)]:
        e = stats.wilson(k, n)
        centre = (k + Z * Z / 2) / (n + Z * Z)
        half = Z / (n + Z * Z) * math.sqrt(k * (n - k) / n + Z * Z / 4)
        assert e.value == k / n and e.n == n
        assert e.lo == pytest.approx(max(0.0, centre - half), abs=1e-12)
        assert e.hi == pytest.approx(min(1.0, centre + half), abs=1e-12)
    assert stats.wilson(0, 0).value is None


def test_iqm_and_bootstrap_intervals():
    x = np.array([0.1, 0.5, 0.55, 0.6, 0.62, 0.7, 0.9, 0.99])
    assert stats.iqm(x) == pytest.approx(np.mean([0.55, 0.6, 0.62, 0.7]))  # the middle half
    e = stats.mean_ci(x)
    ref = sps.bootstrap((x,), np.mean, vectorized=True, method="percentile", n_resamples=stats.RESAMPLES,
                        rng=np.random.default_rng(stats.SEED)).confidence_interval
    assert e.value == pytest.approx(x.mean()) and (e.lo, e.hi) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # large normal sample: the bootstrap interval is about mean ± 1.96 sd / sqrt(n)
    y = np.random.default_rng(3).normal(0.7, 0.1, 400)
    e = stats.mean_ci(y)
    assert (e.hi - e.lo) / 2 == pytest.approx(Z * y.std(ddof=1) / math.sqrt(len(y)), rel=0.15)
    assert stats.iqm_ci(y).has_interval
    # too few seeds for a bootstrap: the value, no interval, and nothing is called a difference
    few = stats.mean_ci([0.1, 0.9, 0.5, 0.4])
    assert few.value == pytest.approx(0.475) and not few.has_interval and not few.excludes(0.0)
    flat = stats.mean_ci([0.8] * 6)
    assert flat.lo == flat.hi == flat.value == pytest.approx(0.8)


def test_probability_of_improvement_by_hand():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0])
    # 4 wins and a tie in 9 pairs: (4 + 0.5) / 9
    assert stats.prob_improvement(x, y) == pytest.approx(4.5 / 9)
    assert stats.prob_improvement(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 1.0


def test_the_pairing_is_used():
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0.0, 0.2, 12)  # what a seed does to every warm-up alike
    y = 0.6 + seed_effect + rng.normal(0, 0.01, 12)
    x = y + 0.03 + rng.normal(0, 0.01, 12)  # a small, consistent improvement
    p = stats.paired(x, y, stats.mean_difference)
    assert p.value == pytest.approx(np.mean(x - y)) and p.excludes(0.0)
    shuffled = stats.paired(x, rng.permutation(y), stats.mean_difference)
    # broken pairs: the seed effect no longer cancels, the interval widens past 0
    assert (shuffled.hi - shuffled.lo) > 5 * (p.hi - p.lo) and not shuffled.excludes(0.0)
    with pytest.raises(ValueError):
        stats.paired([1.0], [1.0, 2.0], stats.mean_difference)


def _study(rng, true_d50: float, slope: float, depths, seeds: int):
    ds, tr = [], []
    for d in depths:
        p = 1 / (1 + math.exp(-slope * (math.log2(d) - math.log2(true_d50))))
        for _ in range(seeds):
            ds.append(d)
            tr.append(bool(rng.random() < p))
    return ds, tr


def test_d50_interval_covers_the_truth():
    # 200 simulated studies with a known boundary: the 95% interval covers it at least 90% of the time
    rng = np.random.default_rng(1)
    depths, covered = [4, 8, 16, 32, 64], 0
    for _ in range(200):
        ds, tr = _study(rng, 20.0, -3.0, depths, 10)
        fit = stats.depth50(ds, tr, 10)
        covered += fit.lo <= 20.0 <= fit.hi
    assert covered >= 180, covered


def test_d50_censoring_and_degenerate_grids():
    all_train = stats.depth50([4, 8, 16] * 5, [True] * 15, 5)
    assert all_train.above and not all_train.bracketed and all_train.text().startswith("> 16")
    none_train = stats.depth50([4, 8, 16] * 5, [False] * 15, 5)
    assert none_train.below and none_train.text().startswith("< 4")
    assert stats.depth50([8] * 5, [True, False] * 2 + [True], 5).value is None
    sharp = stats.depth50([4, 8, 16, 32] * 6, [True, True, False, False] * 6, 6)  # trains below 16, not from 16
    assert sharp.bracketed and 8 <= sharp.value <= 16 and sharp.lo < sharp.value < sharp.hi
    assert sharp.curve(np.array([4.0]))[0] > 0.9 and sharp.curve(np.array([32.0]))[0] < 0.1


def test_d50_difference_finds_a_real_shift_and_not_a_null_one():
    rng = np.random.default_rng(5)
    depths = [4, 8, 16, 32, 64]
    seeds = 20
    keys = [(d, s) for d in depths for s in range(seeds)]
    tx = [bool(rng.random() < 1 / (1 + math.exp(3 * (math.log2(d) - 5)))) for d, _ in keys]  # D50 32
    ty = [bool(rng.random() < 1 / (1 + math.exp(3 * (math.log2(d) - 4)))) for d, _ in keys]  # D50 16
    diff = stats.depth50_difference([d for d, _ in keys], [s for _, s in keys], tx, ty)
    assert diff.excludes(0.0) and diff.lo < 16 < diff.hi
    same = stats.depth50_difference([d for d, _ in keys], [s for _, s in keys], ty, ty)
    assert same.value == 0.0 and not same.excludes(0.0)
    four = [i for i, (_, s) in enumerate(keys) if s < 4]  # fewer seeds than a bootstrap needs
    few = stats.depth50_difference([keys[i][0] for i in four], [keys[i][1] for i in four], [tx[i] for i in four],
                                   [ty[i] for i in four])
    assert few.value is not None and not few.has_interval

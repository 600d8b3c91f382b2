"""Statistics for verdicts: intervals on every cell, paired warm-up comparisons, and the trainable
depth D50. Pure functions of numbers; no elrbench types (docs/statistics.md has the definitions).

Every interval is a 95% interval unless asked otherwise:
- a fraction (trained k of n): Wilson's score interval (scipy.stats.binomtest(...).proportion_ci);
- a mean or an interquartile mean (IQM) of accuracies: a percentile bootstrap over seeds
  (scipy.stats.bootstrap), given from MIN_SEEDS seeds on;
- a paired difference (warm-up X against baseline Y, the same seeds): a paired bootstrap over seeds;
  the probability of improvement P(X > Y) as in rliable (Agarwal et al., NeurIPS 2021);
- D50, the depth at which P(trained) = 0.5: a logistic fit of the outcome on log2(depth) with its
  profile-likelihood interval; a difference of two D50s by a paired bootstrap over seeds.
Bootstraps draw from a fixed seed, so a report is the same every time it is built.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
# A bootstrap over fewer seeds than this gives no interval: with 2-4 values it has only a handful of
# distinct resamples and its intervals are far too narrow (two seeds that agree would be "significant").
# rliable (Agarwal et al. 2021) likewise asks for at least 5 runs per task.
MIN_SEEDS = 5


@dataclass(frozen=True)
class Estimate:
    """A number with its interval (None where it cannot be had, e.g. one seed) and how many went in."""

    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    n: int

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def excludes(self, v: float) -> bool:
        """Whether the interval lies wholly on one side of v (a difference 'detected')."""
        return self.has_interval and (self.lo > v or self.hi < v)

    def text(self, fmt: str = ".3f", signed: bool = False) -> str:
        if self.value is None:
            return "n/a"
        f = ("+" if signed else "") + fmt
        return f"{self.value:{f}}" + (f" [{self.lo:{f}}, {self.hi:{f}}]" if self.has_interval else "")


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The fraction k/n with Wilson's score interval (good at small n and at 0/n or n/n)."""
    if n == 0:
        return Estimate(None, None, None, 0)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(k / n, float(ci.low), float(ci.high), n)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean, 25% cut at each end)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap(x: Sequence[float], statistic: Callable[..., np.ndarray] = _mean, confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """statistic(x) with a percentile-bootstrap interval over the values (seeds)."""
    a = np.asarray([v for v in x if v is not None], dtype=np.float64)
    if len(a) == 0:
        return Estimate(None, None, None, 0)
    value = float(statistic(a))
    if len(a) < MIN_SEEDS:
        return Estimate(value, None, None, len(a))
    if np.all(a == a[0]):  # every resample is the same: a zero-width interval
        return Estimate(value, value, value, len(a))
    res = stats.bootstrap((a,), statistic, vectorized=True, method="percentile", n_resamples=resamples,
                          confidence_level=confidence, rng=np.random.default_rng(seed))
    return Estimate(value, float(res.confidence_interval.low), float(res.confidence_interval.high), len(a))


def mean_ci(x: Sequence[float], **kw) -> Estimate:
    return bootstrap(x, _mean, **kw)


def iqm_ci(x: Sequence[float], **kw) -> Estimate:
    return bootstrap(x, iqm, **kw)


def paired(x: Sequence[float], y: Sequence[float], statistic: Callable[..., np.ndarray],
           confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """statistic(x, y) of paired values (x[i] and y[i] from the same seed), with a paired
    percentile-bootstrap interval: seeds are resampled, each keeping its pair."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    if len(a) == 0:
        return Estimate(None, None, None, 0)
    value = float(statistic(a, b))
    if len(a) < MIN_SEEDS:
        return Estimate(value, None, None, len(a))
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    dist = statistic(a[idx], b[idx])
    lo, hi = np.quantile(dist, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(value, float(lo), float(hi), len(a))


def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def prob_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y): over every pair of a run of X and a run of Y, 1 where X's is higher, 0.5 on a tie
    (rliable's probability of improvement, Agarwal et al. 2021, for one task)."""
    gt = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    eq = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return gt + 0.5 * eq


# ---------------------------------------------------------------- the trainable depth D50
SLOPE_PRIOR = 10.0  # sd of a Gaussian penalty on the slope (logit per doubling of depth): keeps the
# fit finite when the outcomes separate perfectly (every shallow seed trains, no deep one does),
# while a real transition is rarely steeper than a few logits per doubling.
CHI2_1 = float(stats.chi2.ppf(CONFIDENCE, 1))  # 3.84: the profile-likelihood cut for a 95% interval


@dataclass(frozen=True)
class Depth50:
    """D50 in layers, with its interval. below/above: the grid does not bracket it (every depth
    trained mostly, or none did): the estimate lies beyond the smallest or largest depth run, and
    is reported only as '< min' or '> max'. An interval end beyond the grid is open the same way."""

    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    min_depth: int
    max_depth: int
    seeds: int
    slope: float = 0.0  # fitted logit change per doubling of depth (<= 0)

    def curve(self, depths: np.ndarray) -> np.ndarray:
        """The fitted P(trained) at these depths."""
        return 1 / (1 + np.exp(-self.slope * (np.log2(depths) - math.log2(self.value))))

    @property
    def below(self) -> bool:
        return self.value is not None and self.value < self.min_depth

    @property
    def above(self) -> bool:
        return self.value is not None and self.value > self.max_depth

    @property
    def bracketed(self) -> bool:
        return self.value is not None and not self.below and not self.above

    def _end(self, v: Optional[float]) -> str:
        if v is None:
            return "?"
        if v < self.min_depth:
            return f"< {self.min_depth}"
        if v > self.max_depth:
            return f"> {self.max_depth}"
        return f"{v:.0f}"

    def text(self, unit: str = "") -> str:
        """'27 [21, 35]', '> 64 [40, > 64]'; unit goes after the estimate ('27 layers [21, 35]')."""
        if self.value is None:
            return "n/a (needs two depths or more)"
        return f"{self._end(self.value)}{unit} [{self._end(self.lo)}, {self._end(self.hi)}]"


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


class _Grid:
    """Penalized log-likelihood of logit P(trained) = b (log2 depth - m), b <= 0, on a grid of
    (m, b), for many sets of counts at once (one matrix product). Columns: (m, b) pairs."""

    def __init__(self, x: np.ndarray, m_step: float, b_points: int) -> None:
        self.m = np.arange(x.min() - 1.0, x.max() + 1.0 + 1e-9, m_step)
        self.b = np.concatenate([[0.0], -np.geomspace(1e-2, 1e2, b_points)])
        mm, bb = np.meshgrid(self.m, self.b, indexing="ij")  # (M, B)
        z = bb.reshape(-1, 1) * (x[None, :] - mm.reshape(-1, 1))  # (M*B, D)
        self.log_p, self.log_q = _log_sigmoid(z).T, _log_sigmoid(-z).T  # (D, M*B)
        self.penalty = (bb.reshape(-1) ** 2) / (2 * SLOPE_PRIOR**2)
        self.shape = mm.shape

    def loglik(self, k: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(S, D) trained and run counts -> (S, M, B) penalized log-likelihoods."""
        ll = k @ self.log_p + (n - k) @ self.log_q - self.penalty
        return ll.reshape(len(k), *self.shape)

    def profile(self, k: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(S, D) counts -> (S, M): the penalized log-likelihood maximized over the slope."""
        return self.loglik(k, n).max(axis=2)


def _counts(depths: Sequence[int], trained: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = np.array(sorted(set(depths)))
    k = np.array([sum(t for d, t in zip(depths, trained) if d == u) for u in ds], dtype=np.float64)
    n = np.array([sum(1 for d in depths if d == u) for u in ds], dtype=np.float64)
    return np.log2(ds), k, n


def depth50(depths: Sequence[int], trained: Sequence[bool], seeds: int = 0) -> Depth50:
    """D50 from every trial's depth and outcome (over all seeds): the penalized maximum-likelihood
    m of logit P = b (log2 depth - m), b <= 0, and its profile-likelihood interval: every m whose
    profile lies within CHI2_1/2 of the best."""
    lo_d, hi_d = (min(depths), max(depths)) if depths else (0, 0)
    if len(set(depths)) < 2:
        return Depth50(None, None, None, lo_d, hi_d, seeds)
    x, k, n = _counts(depths, trained)
    grid = _Grid(x, 0.005, 400)
    ll = grid.loglik(k[None, :], n[None, :])[0]
    prof = ll.max(axis=1)
    best = int(prof.argmax())
    inside = np.nonzero(2 * (prof[best] - prof) <= CHI2_1)[0]
    m_hat, m_lo, m_hi = grid.m[best], grid.m[inside.min()], grid.m[inside.max()]
    return Depth50(2**m_hat, 2**m_lo, 2**m_hi, lo_d, hi_d, seeds, float(grid.b[int(ll[best].argmax())]))


def depth50_difference(depths: Sequence[int], seeds: Sequence[int], trained_x: Sequence[Optional[bool]],
                       trained_y: Sequence[Optional[bool]], confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """D50(X) - D50(Y) in layers with a paired bootstrap over seeds: the seeds are resampled with
    replacement and both warm-ups keep the resampled seeds' trials. Trials are matched by position:
    depths[i] and seeds[i] describe trained_x[i] and trained_y[i] (None: that trial has no outcome)."""
    ds = sorted(set(depths))
    ss = sorted(set(seeds))
    x = np.log2(np.array(ds, dtype=np.float64))
    # per seed and depth: trained (1/0) and present (1/0) for each warm-up
    t = np.zeros((2, len(ss), len(ds)))
    p = np.zeros((2, len(ss), len(ds)))
    for d, s, a, b in zip(depths, seeds, trained_x, trained_y):
        i, j = ss.index(s), ds.index(d)
        for w, v in ((0, a), (1, b)):
            if v is not None:
                t[w, i, j], p[w, i, j] = float(v), 1.0
    grid = _Grid(x, 0.02, 120)

    def m_hat(k: np.ndarray, n: np.ndarray) -> np.ndarray:
        return grid.m[grid.profile(k, n).argmax(axis=1)]

    point = 2 ** m_hat(t.sum(1), p.sum(1))
    value = float(point[0] - point[1])
    if len(ss) < MIN_SEEDS:
        return Estimate(value, None, None, len(ss))
    idx = np.random.default_rng(seed).integers(0, len(ss), size=(resamples, len(ss)))
    diffs = []
    for chunk in np.array_split(idx, max(1, resamples // 100)):
        k = t[:, chunk, :].sum(2)  # (2, S, D)
        n = p[:, chunk, :].sum(2)
        diffs.append(2 ** m_hat(k[0], n[0]) - 2 ** m_hat(k[1], n[1]))
    dist = np.concatenate(diffs)
    lo, hi = np.quantile(dist, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Estimate(value, float(lo), float(hi), len(ss))

"""Statistics for verdicts: intervals on every cell, paired warm-up comparisons, the trainable depth
D50 per learning rate and at each warm-up's best learning rate. Pure functions of numbers; no
elrbench types. docs/statistics.md has the definitions, the sources and the coverage of every
interval as measured by benchmarks/coverage.py on simulated studies with a known truth.

Every interval is a 95% interval unless asked otherwise:
- a fraction (trained k of n): Wilson's score interval;
- a paired difference of fractions (trained under X minus under Y, the same seeds): Newcombe's
  hybrid score interval for paired data (Newcombe 1998, method 10);
- a median accuracy and the median of paired accuracy differences: the order-statistic interval
  (distribution-free; what the cells and the paired tables print);
- a mean (spreads) and a paired mean difference: Student's t interval over seeds; an interquartile
  mean: the Tukey-McLaughlin interval (measured for the record: neither holds 93% on the bimodal
  accuracies near the edge, so accuracy cells print medians);
- the probability of improvement P(X > Y): a score-type interval with the Hanley-McNeil variance
  (Newcombe 2006, method 5);
- D50, the depth at which P(trained) = 0.5: a logistic fit of the outcome on log2(depth) with its
  profile-likelihood interval; a difference of two D50s by inverting the profile likelihood of the
  difference; D50 at the best learning rate with simultaneous (Sidak) intervals over the learning rates.
No interval is given from fewer than MIN_SEEDS values (except a fraction's and D50's, which are exact
about what few trials say), nor from values that are all equal: those print the value alone.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import numpy as np


class _OnFirstUse:
    """A module imported when one of its names is first read. scipy.stats and scipy.special take
    0.7 s to import (of the 2 s every `elrbench` command spent starting); validate, show, status and
    a submit until its trials end read none of their names."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        module = self.__dict__.get("_module") or importlib.import_module(self._name)
        self.__dict__["_module"] = module
        return getattr(module, attr)


special, stats = _OnFirstUse("scipy.special"), _OnFirstUse("scipy.stats")

CONFIDENCE = 0.95
# A t, trimmed-mean or improvement interval over fewer values than this gives no interval: with 2-4
# seeds they rest on a variance from a handful of values (rliable, Agarwal et al. 2021, likewise asks
# for at least 5 runs per task); fractions and D50 do not need it.
MIN_SEEDS = 5
MEDIAN_SEEDS = 6  # the fewest seeds whose order statistics hold the median with 95% (96.9% at 6)


@dataclass(frozen=True)
class Estimate:
    """A number with its interval (None where it cannot be had, `why` says why) and how many went in.
    An interval end may be -inf or inf: the data bound the quantity on one side only."""

    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    n: int
    why: Optional[str] = None

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


def _none(values: np.ndarray, value: Optional[float], why: str) -> Estimate:
    return Estimate(value, None, None, len(values), why)


def _z(confidence: float) -> float:
    return float(stats.norm.ppf((1 + confidence) / 2))


# ---------------------------------------------------------------- fractions
def wilson_bounds(k: np.ndarray, n: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval for k successes of n (arrays; n > 0). Wilson, JASA 22 (1927) 209;
    the closed form as in Newcombe, Stat. Med. 17 (1998) 857, method 3."""
    z = _z(confidence)
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # exactly 0 at k = 0 and 1 at k = n (rounding would leave 1e-17 and exclude a tiny true fraction)
    lo = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    return lo, np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """The fraction k/n with Wilson's score interval (good at small n and at 0/n or n/n)."""
    if n == 0:
        return Estimate(None, None, None, 0, "no trial")
    lo, hi = wilson_bounds(np.array(k), np.array(n), confidence)
    return Estimate(k / n, float(lo), float(hi), n)


def paired_fraction_difference(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """mean(x) - mean(y) for paired 0/1 outcomes (x[i] and y[i] from the same seed), with Newcombe's
    hybrid score interval for paired proportions (Newcombe, Stat. Med. 17 (1998) 2635, method 10):
    Wilson intervals of both margins combined with the phi correlation of the 2x2 table. Never of
    zero width: 10 seeds that all train under both give about +-0.28."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return Estimate(None, None, None, 0, "no pair")
    lo, hi = newcombe_paired_bounds(np.array([[(a * b).sum(), (a * (1 - b)).sum(), ((1 - a) * b).sum(),
                                               ((1 - a) * (1 - b)).sum()]]), confidence)
    return Estimate(float(a.mean() - b.mean()), float(lo[0]), float(hi[0]), n)


def newcombe_paired_bounds(table: np.ndarray, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's method 10 for rows of 2x2 counts (both, x only, y only, neither): the interval of
    P(x) - P(y)."""
    e, f, g, h = (table[:, i].astype(np.float64) for i in range(4))
    n = e + f + g + h
    p1, p2 = (e + f) / n, (e + g) / n
    l1, u1 = wilson_bounds(e + f, n, confidence)
    l2, u2 = wilson_bounds(e + g, n, confidence)
    denom = (e + f) * (g + h) * (e + g) * (f + h)
    # phi of the 2x2 table with Newcombe's continuity correction (a positive e h - f g less n/2, not
    # below 0), 0 when a margin is empty
    num = e * h - f * g
    num = np.where(num > 0, np.maximum(num - n / 2, 0.0), num)
    phi = np.divide(num, np.sqrt(denom), out=np.zeros_like(n), where=denom > 0)
    d = p1 - p2
    lo = d - np.sqrt(np.maximum((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    hi = d + np.sqrt(np.maximum((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)


# ---------------------------------------------------------------- means
def _values(x: Sequence[Optional[float]]) -> np.ndarray:
    return np.asarray([v for v in x if v is not None], dtype=np.float64)


def _t_interval(values: np.ndarray, value: float, se: float, df: int, confidence: float) -> Estimate:
    if len(values) < MIN_SEEDS:
        return _none(values, value, f"{len(values)} seeds ({MIN_SEEDS} or more needed)")
    if not se > 0:
        return _none(values, value, "every seed gave the same value")
    t = float(stats.t.ppf((1 + confidence) / 2, df))
    return Estimate(value, value - t * se, value + t * se, len(values))


def mean_ci(x: Sequence[Optional[float]], confidence: float = CONFIDENCE) -> Estimate:
    """The mean over seeds with Student's t interval (None values are left out)."""
    a = _values(x)
    if len(a) == 0:
        return Estimate(None, None, None, 0, "no value")
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 and np.ptp(a) > 0 else 0.0
    return _t_interval(a, float(a.mean()), se, len(a) - 1, confidence)


def mean_difference_ci(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """mean(x - y) of paired values (x[i] and y[i] from the same seed), with the paired t interval:
    what a seed does to both alike cancels."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    return mean_ci(list(a - b), confidence)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean, 25% cut at each end)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def iqm_ci(x: Sequence[Optional[float]], confidence: float = CONFIDENCE) -> Estimate:
    """The interquartile mean with the Tukey-McLaughlin interval for a trimmed mean (Tukey &
    McLaughlin, Sankhya A 25 (1963) 331; as in Wilcox, Introduction to Robust Estimation, 3.6): the
    winsorized standard deviation over (1 - 2 * 0.25) sqrt(n), t with n - 2g - 1 degrees of freedom,
    g = floor(n / 4) values cut at each end."""
    a = np.sort(_values(x))
    if len(a) == 0:
        return Estimate(None, None, None, 0, "no value")
    n, g = len(a), len(a) // 4
    value = float(iqm(a))
    if n < MIN_SEEDS:
        return _t_interval(a, value, 0.0, 1, confidence)
    w = np.clip(a, a[g], a[n - g - 1])  # winsorized: the g lowest and highest set to their neighbours
    se = float(w.std(ddof=1) / (0.5 * math.sqrt(n))) if np.ptp(w) > 0 else 0.0
    return _t_interval(a, value, se, n - 2 * g - 1, confidence)


def median_ci(x: Sequence[Optional[float]], confidence: float = CONFIDENCE) -> Estimate:
    """The median over seeds with the distribution-free order-statistic interval (the inversion of the
    sign test; e.g. Conover, Practical Nonparametric Statistics, 3.2): [x_(r), x_(n+1-r)] with the
    largest r whose binomial(n, 1/2) coverage 1 - 2 P(B <= r - 1) is at least `confidence`. Exact
    for any continuous distribution, so a failure mode that the seeds rarely show cannot make it
    lie. Five seeds allow only [x_(1), x_(5)], which covers 93.75%: no interval below MEDIAN_SEEDS."""
    a = np.sort(_values(x))
    if len(a) == 0:
        return Estimate(None, None, None, 0, "no value")
    value = float(np.median(a))
    if len(a) < MEDIAN_SEEDS:
        return _none(a, value, f"{len(a)} seeds ({MEDIAN_SEEDS} or more needed)")
    n = len(a)
    # the coverage of r + 1 for r = 1, 2, ...: it falls as r grows, so r is 1 + how many still cover
    # enough (one vectorized cdf: 100,000 seeds took 100,000 scalar calls, 3 s)
    ks = np.arange(1, n // 2 + 2)
    r = 1 + int(np.count_nonzero(1 - 2 * stats.binom.cdf(ks, n, 0.5) >= confidence))
    lo, hi = float(a[r - 1]), float(a[n - r])
    if lo == hi:
        return _none(a, value, "every seed gave the same value")
    return Estimate(value, lo, hi, n)


def median_difference_ci(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """The median of the paired differences x[i] - y[i] (the same seed) with its order-statistic interval."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    return median_ci(list(a - b), confidence)


def prob_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 over the pairs of a run of X and a run of Y from different seeds (rliable's
    probability of improvement, Agarwal et al. 2021, for one task; the pairs of one seed are left
    out because they are not independent draws, which would bias the estimate by about 1/n)."""
    gt = (x[..., :, None] > y[..., None, :]).astype(np.float64)
    eq = (x[..., :, None] == y[..., None, :]).astype(np.float64)
    n = x.shape[-1]
    off = 1.0 - np.eye(n)
    return ((gt + 0.5 * eq) * off).sum(axis=(-2, -1)) / (n * (n - 1))


_THETA = np.linspace(0.0, 1.0, 20001)


def improvement_bounds(theta_hat: np.ndarray, n: int, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The score-type interval for P(X > Y) from n runs of each: every theta with (theta_hat - theta)^2
    <= t^2 V(theta), V the Hanley-McNeil variance with both group sizes n (Hanley & McNeil, Radiology
    143 (1982) 29; the score-type inversion is method 5 of Newcombe, Stat. Med. 25 (2006) 559), t the
    Student quantile with n - 1 degrees of freedom for a variance that rests on n seeds (as Brunner &
    Munzel, Biom. J. 42 (2000) 17, use t for this effect; with z it covered 93.5-94.5% at 5-20 seeds
    in benchmarks/coverage.py). It ignores the pairing by seed; never of zero width."""
    z = float(stats.t.ppf((1 + confidence) / 2, n - 1))
    t = _THETA
    v = t * (1 - t) / (n * n) * (1 + (n - 1) * (1 - t) / (2 - t) + (n - 1) * t / (1 + t))
    ok = (np.asarray(theta_hat)[..., None] - t) ** 2 <= z * z * v
    lo = np.where(ok.any(-1), t[ok.argmax(-1)], np.nan)
    hi = np.where(ok.any(-1), t[len(t) - 1 - ok[..., ::-1].argmax(-1)], np.nan)
    return lo, hi


def prob_improvement_ci(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """P(X > Y) of paired runs (x[i] and y[i] from the same seed) with its score-type interval."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired values of different lengths: {len(a)} and {len(b)}")
    value = float(prob_improvement(a, b)) if len(a) >= 2 else None
    if len(a) < MIN_SEEDS:
        return _none(a, value, f"{len(a)} seeds ({MIN_SEEDS} or more needed)")
    lo, hi = improvement_bounds(np.array(value), len(a), confidence)
    return Estimate(value, float(lo), float(hi), len(a))


# ---------------------------------------------------------------- the trainable depth D50
M_STEP = 0.01  # grid step of log2 D50 (0.7% of a depth)
# slopes b (logit change per doubling of depth, b <= 0): 0, then from nearly flat to a step function
# (-2000 per doubling: between depths 16 and 24 a jump of 1,170 logits, so that separated data leave
# every D50 up to a hair's breadth of both depths inside the interval)
SLOPES = np.concatenate([[0.0], -np.geomspace(0.02, 2000.0, 260)])
PLATEAU = 1e-6  # log-likelihoods this close to the best are "equally good" (separated data)


def cut(confidence: float) -> float:
    """Half the chi-square(1) quantile: a profile log-likelihood this far below its best is outside."""
    return float(stats.chi2.ppf(confidence, 1)) / 2


def sidak(confidence: float, k: int) -> float:
    """The level of each of k independent intervals for all k to hold together with `confidence`."""
    return confidence ** (1.0 / k)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


@lru_cache(maxsize=64)
def _grid(x: tuple[float, ...], lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log2 D50 values m from lo to hi, and log P / log (1 - P) at the depths x for every (m, b)."""
    m = np.arange(lo, hi + 1e-9, M_STEP)
    xs = np.asarray(x)
    z = SLOPES[None, :, None] * (xs[None, None, :] - m[:, None, None])  # (M, B, D)
    return m, _log_sigmoid(z).reshape(-1, len(xs)).T.copy(), _log_sigmoid(-z).reshape(-1, len(xs)).T.copy()


def span(depths: Sequence[int]) -> tuple[float, float]:
    """The log2 D50 range searched: from half the smallest depth to twice the largest."""
    return math.log2(min(depths)) - 1.0, math.log2(max(depths)) + 1.0


def profiles(x: Sequence[float], k: np.ndarray, n: np.ndarray, rng: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Profile log-likelihoods of log2 D50 for S sets of counts at the depths 2**x: (m grid, (S, M)
    profiles, (S, M) slope that attains each, (S, B) profiles of the slope over SLOPES).
    logit P(trained) = b (log2 depth - m), b <= 0, maximum likelihood over b (no penalty: separated
    data leave every m between the two depths equally good, which is what the data say)."""
    m, log_p, log_q = _grid(tuple(float(v) for v in x), *rng)
    k, n = np.atleast_2d(k).astype(np.float64), np.atleast_2d(n).astype(np.float64)
    out, slope = np.empty((len(k), len(m))), np.empty((len(k), len(m)))
    by_slope = np.empty((len(k), len(SLOPES)))
    chunk = max(1, 4_000_000 // log_p.shape[1])  # bounded memory: about 32 MB of log-likelihoods at a time
    for i in range(0, len(k), chunk):
        s = slice(i, i + chunk)
        ll = (k[s] @ log_p + (n[s] - k[s]) @ log_q).reshape(-1, len(m), len(SLOPES))
        j = ll.argmax(axis=2)
        out[s] = np.take_along_axis(ll, j[..., None], axis=2)[..., 0]
        slope[s] = SLOPES[j]
        by_slope[s] = ll.max(axis=1)
    return m, out, slope, by_slope


def _inside(prof: np.ndarray, c: float) -> tuple[int, int]:
    """First and last grid index of the interval, one step outward (the continuous end lies between
    the last point inside and the first outside: taking the outer one keeps it inside)."""
    inside = np.nonzero(prof.max() - prof <= c)[0]
    return max(int(inside.min()) - 1, 0), min(int(inside.max()) + 1, len(prof) - 1)


def _interval(m: np.ndarray, prof: np.ndarray, c: float) -> tuple[float, float]:
    lo, hi = _inside(prof, c)
    return float(m[lo]), float(m[hi])


@dataclass(frozen=True)
class Depth50:
    """D50 in layers, with its interval. below/above: the grid does not bracket it (every depth
    trained mostly, or none did): the estimate lies beyond the smallest or largest depth run, and
    is reported only as '< min' or '> max'. An interval end beyond the grid is open the same way.
    value None: not estimated, `why` says why (one depth only; P(trained) does not fall with depth)."""

    value: Optional[float]
    lo: Optional[float]
    hi: Optional[float]
    min_depth: int
    max_depth: int
    seeds: int
    slope: float = 0.0  # fitted logit change per doubling of depth (<= 0)
    why: Optional[str] = None
    lr: Optional[float] = None  # the learning rate it belongs to (at the best lr: the one chosen)
    calibration: float = 1.0  # its cut over the chi-square one (>= 1; the parametric-bootstrap calibration)
    m: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # log2 D50 grid
    profile: Optional[np.ndarray] = field(default=None, compare=False, repr=False)  # its profile log-lik

    def curve(self, depths: np.ndarray) -> np.ndarray:
        """The fitted P(trained) at these depths."""
        return special.expit(self.slope * (np.log2(depths) - math.log2(self.value)))

    @property
    def below(self) -> bool:
        return self.value is not None and self.value < self.min_depth

    @property
    def above(self) -> bool:
        return self.value is not None and self.value > self.max_depth

    @property
    def bracketed(self) -> bool:
        return self.value is not None and not self.below and not self.above

    def interval(self, confidence: float) -> tuple[float, float]:
        """The profile-likelihood interval at another level (in layers; ends beyond the grid stay so), its
        chi-square cut scaled by this fit's calibration."""
        lo, hi = _interval(self.m, self.profile, cut(confidence) * self.calibration)
        return 2**lo, 2**hi

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
            return f"not identified ({self.why})" if self.why else "n/a"
        return f"{self._end(self.value)}{unit} [{self._end(self.lo)}, {self._end(self.hi)}]"


def _counts(depths: Sequence[int], trained: Sequence[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = np.array(sorted(set(depths)))
    k = np.array([sum(t for d, t in zip(depths, trained) if d == u) for u in ds], dtype=np.float64)
    n = np.array([sum(1 for d in depths if d == u) for u in ds], dtype=np.float64)
    return ds, k, n


LIMB_CONFIDENCE = 0.99  # Wilson level of "clearly below the peak" for the descending limb (at 0.95 a
# flat curve was read as falling in 9.5% of simulated studies; coverage.py)
CALIBRATION_DRAWS = 200  # parametric-bootstrap draws that calibrate each D50 interval's cut
_COARSE_SLOPES = np.concatenate([[0.0], -np.geomspace(0.02, 200.0, 60)])


def _loglik(x: np.ndarray, m: np.ndarray, slopes: np.ndarray, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(S, len(m), len(slopes)) log-likelihoods of counts (S, D) at depths 2**x."""
    z = slopes[None, :, None] * (x[None, None, :] - m[:, None, None])  # (M, B, D)
    lp, lq = _log_sigmoid(z).reshape(-1, len(x)).T, _log_sigmoid(-z).reshape(-1, len(x)).T
    return (k @ lp + (n - k) @ lq).reshape(len(k), len(m), len(slopes))


def calibrated_cut(x: np.ndarray, n: np.ndarray, m_hat: float, slope: float, rng: tuple[float, float],
                   confidence: float = CONFIDENCE, draws: int = CALIBRATION_DRAWS, seed: int = 0) -> float:
    """The profile cut that gives `confidence` for this design and fit: the quantile of the
    likelihood-ratio statistic of the true D50 in studies simulated from the fitted curve (a
    parametric bootstrap calibration of the likelihood ratio, Efron & Tibshirani, An Introduction to
    the Bootstrap, 1993, 12.5; on a coarser grid). The chi-square cut is the asymptotic value of the
    same quantile and too small for few seeds: with 5 seeds it covered 89% (benchmarks/coverage.py)."""
    p = special.expit(slope * (x - m_hat))
    k = np.random.default_rng(seed).binomial(n.astype(np.int64), p, size=(draws, len(x))).astype(np.float64)
    nn = np.broadcast_to(n, k.shape)
    m = np.append(np.arange(rng[0], rng[1] + 1e-9, 4 * M_STEP), m_hat)
    ll = _loglik(x, m, _COARSE_SLOPES, k, nn)
    t = ll.max(axis=(1, 2)) - ll[:, -1, :].max(axis=1)
    return float(np.quantile(t, confidence))


NUISANCE_GAMMA = 0.01  # Berger-Boos: the slope's confidence set is at 1 - gamma, each calibration at conf + gamma


def robust_cut(x: np.ndarray, n: np.ndarray, by_slope: np.ndarray, m_hat: float, slope: float,
               rng: tuple[float, float], confidence: float = CONFIDENCE) -> float:
    """The calibrated cut maximized over the slopes the data allow (Berger & Boos, JASA 89 (1994) 1012:
    a test maximized over a 1 - gamma confidence set of the nuisance parameter, at level alpha - gamma,
    holds alpha). Calibrating at the fitted slope alone trusts it: nearly separated data (few trials
    a depth, as an adaptive design places them near D50) fit a step, whose calibration gives the
    chi-square cut, and the interval covered 87% (benchmarks/adaptive.py). Here the cut is the largest
    calibrated one at the fitted slope, at the shallowest slope of the set, and at their geometric mean."""
    ok = SLOPES[(by_slope >= by_slope.max() - cut(1 - NUISANCE_GAMMA)) & (SLOPES < 0)]  # by_slope: profiles()
    level = confidence + NUISANCE_GAMMA
    slopes = {slope} if not len(ok) or slope == 0 else {slope, float(ok.max()), -math.sqrt(ok.max() * slope)}
    return max(calibrated_cut(x, n, m_hat, b, rng, level) for b in slopes)


def _flat_loglik(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Log-likelihood of one trained fraction at every depth, for rows of counts."""
    tk, tn = k.sum(axis=-1), n.sum(axis=-1)
    q = np.clip(tk / tn, 1e-300, 1 - 1e-16)
    return np.where(tk > 0, tk * np.log(q), 0.0) + np.where(tk < tn, (tn - tk) * np.log1p(-q), 0.0)


def decline_cut(x: np.ndarray, n: np.ndarray, confidence: float = CONFIDENCE, draws: int = CALIBRATION_DRAWS,
                seed: int = 1) -> float:
    """How much better than one fraction at every depth (p = 1/2) the best logistic fits by chance:
    the `confidence` quantile of that log-likelihood gain in studies simulated without any decline
    (a parametric bootstrap; the gain is no chi-square because the logistic can place a step
    between any two depths, like a change-point)."""
    k = np.random.default_rng(seed).binomial(n.astype(np.int64), 0.5, size=(draws, len(x))).astype(np.float64)
    nn = np.broadcast_to(n, k.shape)
    m = np.arange(x.min() - 1.0, x.max() + 1.0 + 1e-9, 4 * M_STEP)
    gain = _loglik(x, m, _COARSE_SLOPES, k, nn).max(axis=(1, 2)) - _flat_loglik(k, nn)
    return float(np.quantile(gain, confidence))


def descending_limb(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The counts (S, D) with the depths before the most-trained one set to 0 of 0, but only those whose
    Wilson interval lies wholly below that depth's: a clear rise (a flat curve must stay flat, or
    picking its noisy maximum would manufacture a decline). The limb starts after the last clearly
    lower depth before the peak."""
    frac = np.divide(k, n, out=np.full_like(k, -1.0), where=n > 0)
    peak = frac.argmax(axis=1)
    lo_w, hi_w = wilson_bounds(k, np.maximum(n, 1), LIMB_CONFIDENCE)
    rows, cols = np.arange(len(k)), np.arange(k.shape[1])[None, :]
    below = (hi_w < lo_w[rows, peak][:, None]) & (n > 0) & (cols < peak[:, None])
    last = np.where(below.any(axis=1), k.shape[1] - 1 - np.argmax(below[:, ::-1], axis=1), -1)
    keep = cols > last[:, None]
    return np.where(keep, k, 0.0), np.where(keep, n, 0.0)


def fit_depth50(ds: np.ndarray, k: np.ndarray, n: np.ndarray, seeds: int, rng: Optional[tuple[float, float]] = None,
                confidence: float = CONFIDENCE, lr: Optional[float] = None) -> list[Depth50]:
    """D50 for S sets of counts (k, n of shape (S, D)) at the depths ds (each a depth run): the
    maximum-likelihood m of logit P = b (log2 depth - m), b <= 0 (the middle of the best plateau when
    the data separate), and its profile-likelihood interval: every m whose profile lies within the
    calibrated cut of the best (calibrated_cut; never below chi2_1(confidence)/2).
    - The fit reads the descending limb: depths shallower than the one with the highest trained
      fraction are left out when their Wilson interval lies wholly below its (a net too small to
      reach the threshold is not what D50 is about).
    - Not identified when the interval reaches both ends of the searched range: the data do not say
      that P(trained) falls with depth."""
    ds = np.asarray(ds)
    k, n = np.atleast_2d(k).astype(np.float64), np.atleast_2d(n).astype(np.float64)
    if len(ds) < 2:
        why = f"needs two depths or more; run at depth {int(ds[0])} only" if len(ds) else "no trial"
        lo_d, hi_d = (int(ds.min()), int(ds.max())) if len(ds) else (0, 0)  # (min(initial=0) would say depth 0)
        return [Depth50(None, None, None, lo_d, hi_d, seeds, why=why, lr=lr)
                for _ in k]
    kk, nn = descending_limb(k, n)
    rng = rng or span(ds)
    x = np.log2(ds)
    m, prof, slope, by_slope = profiles(x, kk, nn, rng)
    asymptotic = cut(confidence)
    out = []
    for i in range(len(k)):
        p = prof[i]
        best = p.max()
        top = np.nonzero(best - p <= PLATEAU)[0]
        j = int(round((top.min() + top.max()) / 2))
        base = dict(min_depth=int(ds[0]), max_depth=int(ds[-1]), seeds=seeds, lr=lr, m=m, profile=p)
        first, last = f"{int(k[i, 0])}/{int(n[i, 0])}", f"{int(k[i, -1])}/{int(n[i, -1])}"
        why = (f"P(trained) does not fall with depth: {first} trained at depth {int(ds[0])}, {last} at "
               f"{int(ds[-1])}")
        if (nn[i] > 0).sum() < 2:
            out.append(Depth50(None, None, None, why=why, **base))
            continue
        c = max(asymptotic, robust_cut(x, nn[i], by_slope[i], float(m[j]), float(slope[i, j]), rng, confidence))
        lo, hi = _inside(p, c)
        # a decline the data show: the logistic must beat one fraction at every depth by more than it
        # does by chance (decline_cut), unless that fraction is clearly above or below 1/2 (then D50
        # lies beyond the grid); a flat curve at 1/2 otherwise passed for a falling one in 9% of
        # simulated studies (coverage.py)
        # each of the two checks at half the error: together they keep flat data "not identified" in
        # at least `confidence` of studies
        half = (1 + confidence) / 2
        q_lo, q_hi = wilson_bounds(np.array(kk[i].sum()), np.array(nn[i].sum()), half)
        above, below = m[j] > x[-1], m[j] < x[0]
        beyond = (above and q_lo > 0.5) or (below and q_hi < 0.5)  # every depth mostly trains, or none
        undecided = not beyond and best - float(_flat_loglik(kk[i], nn[i])) <= decline_cut(x, nn[i], half)
        if (lo == 0 and hi == len(m) - 1) or undecided:
            out.append(Depth50(None, None, None, why=why, **base))
        else:
            out.append(Depth50(float(2 ** m[j]), float(2 ** m[lo]), float(2 ** m[hi]),
                               slope=float(slope[i, j]), calibration=c / asymptotic, **base))
    return out


def depth50(depths: Sequence[int], trained: Sequence[bool], seeds: int = 0, rng: Optional[tuple[float, float]] = None,
            lr: Optional[float] = None) -> Depth50:
    """D50 from every trial's depth and outcome (over all seeds). rng: the log2 D50 range searched
    (default: span(depths)); fits to be compared must share it."""
    ds, k, n = _counts(depths, trained)
    return fit_depth50(ds, k[None, :], n[None, :], seeds, rng, lr=lr)[0]


def _difference_profile(x: Depth50, y: Depth50) -> tuple[np.ndarray, np.ndarray]:
    """The profile log-likelihood of D50(X) - D50(Y) in layers (X and Y independent): for each
    difference, the best D50(Y) with D50(X) = D50(Y) + difference. Both fits on the same grid."""
    if x.m is None or y.m is None or len(x.m) != len(y.m) or x.m[0] != y.m[0]:
        raise ValueError("D50 fits to be compared must share their grid (fit them with the same rng)")
    d = 2 ** x.m
    step = max(0.05, float(d[-1] - d[0]) / 2000)  # a twentieth of a layer, or 4,000 steps at most
    delta = np.arange(d[0] - d[-1], d[-1] - d[0] + step / 2, step)
    target = np.log2(np.clip(d[None, :] + delta[:, None], d[0], d[-1]))  # (K, M): log2 D50(X)
    px = np.interp(target, x.m, x.profile)
    valid = (d[None, :] + delta[:, None] >= d[0]) & (d[None, :] + delta[:, None] <= d[-1])
    prof = np.where(valid, px + y.profile[None, :], -np.inf).max(axis=1)
    return delta, prof


def _difference_bounds(x: Depth50, y: Depth50, confidence: float) -> tuple[float, float]:
    """The difference's profile interval at the chi-square cut scaled by the larger of the two fits'
    calibrations: with the chi-square cut alone the difference covered 88% under an adaptive design
    whose fits needed calibrating (benchmarks/adaptive.py, slope -6)."""
    delta, prof = _difference_profile(x, y)
    i, j = _inside(prof, cut(confidence) * max(x.calibration, y.calibration))
    return (-math.inf if i == 0 else float(delta[i])), (math.inf if j == len(delta) - 1 else float(delta[j]))


def depth50_difference(x: Depth50, y: Depth50, confidence: float = CONFIDENCE) -> Estimate:
    """D50(X) - D50(Y) in layers: the difference of the two estimates, with the interval that inverts
    the profile likelihood of the difference (every difference whose profile lies within
    chi2_1(confidence)/2 of the best, scaled by the larger calibration of the two fits). X and Y are
    taken as independent; trials paired by seed are
    positively correlated in practice, which can only make the interval wider than needed."""
    if x.m is not None and y.m is not None and (len(x.m) != len(y.m) or x.m[0] != y.m[0]):
        raise ValueError("D50 fits to be compared must share their grid (fit them with the same rng)")
    if not (x.bracketed and y.bracketed):
        return Estimate(None, None, None, min(x.seeds, y.seeds), "the grid does not bracket both")
    value = x.value - y.value
    if min(x.seeds, y.seeds) < MIN_SEEDS:  # coverage measured from 5 seeds on (benchmarks/coverage.py)
        return Estimate(value, None, None, min(x.seeds, y.seeds),
                        f"{min(x.seeds, y.seeds)} seeds ({MIN_SEEDS} or more needed)")
    lo, hi = _difference_bounds(x, y, confidence)
    return Estimate(value, min(lo, value), max(hi, value), min(x.seeds, y.seeds))


def _rank(f: Depth50) -> float:
    return -math.inf if f.value is None else f.value


def best_depth50(fits: Sequence[Depth50], confidence: float = CONFIDENCE) -> Depth50:
    """D50 at the best learning rate: the largest D50 over the learning rates (fits, one per lr, on
    one grid), with the lr that gives it. Its interval holds the choice of lr: every lr's
    profile-likelihood interval at the Sidak level confidence**(1/L) (independent trials, so all L hold
    together with `confidence`), and max over lrs of the truths lies between the largest lower end and
    the largest upper end. An lr whose D50 is not identified counts with the whole searched range."""
    fits = list(fits)
    if len(fits) == 1:
        return fits[0]
    ok = [f for f in fits if f.value is not None]
    if not ok:
        return fits[0]
    best = max(ok, key=_rank)
    c = sidak(confidence, len(fits))
    ends = [(2 ** f.m[0], 2 ** f.m[-1]) if f.value is None else f.interval(c) for f in fits if f.m is not None]
    lo, hi = max(e[0] for e in ends), max(e[1] for e in ends)
    return Depth50(best.value, lo, hi, min(f.min_depth for f in fits), max(f.max_depth for f in fits),
                   min(f.seeds for f in fits), best.slope, None, best.lr, best.calibration, best.m, best.profile)


def best_depth50_difference(xs: Sequence[Depth50], ys: Sequence[Depth50], confidence: float = CONFIDENCE) -> Estimate:
    """max_lr D50(X) - max_lr D50(Y): the difference of the two best-lr estimates, with an interval
    from every pair of lrs (i of X, j of Y): the profile interval of D50(X_i) - D50(Y_j) at the
    Bonferroni level 1 - (1 - confidence)/(Lx Ly); since max_i x_i - max_j y_j = max_i min_j (x_i -
    y_j), it lies in [max_i min_j lo_ij, max_i min_j hi_ij] when every pair's interval holds. One lr
    each: the plain D50 difference."""
    xs, ys = list(xs), list(ys)
    if len(xs) == 1 and len(ys) == 1:
        return depth50_difference(xs[0], ys[0], confidence)
    bx, by = best_depth50(xs, confidence), best_depth50(ys, confidence)
    if not (bx.bracketed and by.bracketed):
        return Estimate(None, None, None, min(bx.seeds, by.seeds), "the grid does not bracket both")
    if min(bx.seeds, by.seeds) < MIN_SEEDS:
        return Estimate(bx.value - by.value, None, None, min(bx.seeds, by.seeds),
                        f"{min(bx.seeds, by.seeds)} seeds ({MIN_SEEDS} or more needed)")
    c = 1 - (1 - confidence) / (len(xs) * len(ys))
    bounds = [[_difference_bounds(x, y, c) for y in ys] for x in xs]
    lo = max(min(b[0] for b in row) for row in bounds)
    hi = max(min(b[1] for b in row) for row in bounds)
    value = bx.value - by.value
    return Estimate(value, min(lo, value), max(hi, value), min(bx.seeds, by.seeds))

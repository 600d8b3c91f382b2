"""The adaptive depth search against the grid: trials needed for a D50 interval of a given width.

    python benchmarks/adaptive.py              # simulated arms, 100 replications (~15 min on 1 core)
    python benchmarks/adaptive.py --quick      # 25 replications
    python benchmarks/adaptive.py --real DIR_GRID DIR_ADAPTIVE   # two finished studies of the real network

Simulated arms: two warm-ups (X and the baseline Y) with known logistic truths P(trained | depth)
(slope b per doubling of depth, D50 where it crosses 1/2), outcomes paired by seed as in
benchmarks/coverage.py (a seed's latent draw at a depth is shared by both warm-ups, rho = 0.5).
The search range is [4, 32] (every integer depth).
- adaptive: elrbench's own search (elrbench/adaptive.py), target width W layers for both arms'
  D50 intervals (measured at 99%, as the search does), round_size 5, stopped by the target or by a
  budget of 600 trials, 10 seeds;
- grid: the demo's kind of grid over the same range (depths 4, 6, 8, 11, 16, 23, 32: a step of
  sqrt 2), two seeds after another (each seed one trial at every depth under both warm-ups) until
  both intervals are at most W wide by the same rule (at 99%), 40 seeds at most (a grid with the
  same 10 seeds as the search mostly never gets there).
Each prints the trials it needed (median and quartiles over replications; both warm-ups counted),
the share of replications that reached the target, the ratio adaptive / grid, and the coverage
of the D50 intervals and of their difference when they stopped.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from elrbench import stats  # noqa: E402
from elrbench.adaptive import Layout, Rule, Search  # noqa: E402

RHO = 0.5
RANGE = (4, 32)
GRID = [4, 6, 8, 11, 16, 23, 32]


def logistic(depths: np.ndarray, d50: float, slope: float) -> np.ndarray:
    return 1 / (1 + np.exp(-slope * (np.log2(depths) - math.log2(d50))))


@dataclass(frozen=True)
class Truth:
    name: str
    d50: tuple[float, float]  # X, Y
    slope: float

    def p(self, depths: np.ndarray) -> np.ndarray:
        """(2, D) true P(trained)."""
        return np.stack([logistic(depths, d, self.slope) for d in self.d50])


def outcomes(truth: Truth, depths: np.ndarray, n_seeds: int, rng: np.random.Generator) -> np.ndarray:
    """(2, D, S) trained, paired by seed: the latent of (depth, seed) is shared by both warm-ups."""
    u = rng.standard_normal((1, len(depths), n_seeds))
    z = math.sqrt(RHO) * u + math.sqrt(1 - RHO) * rng.standard_normal((2, len(depths), n_seeds))
    return sps.norm.cdf(z) < truth.p(depths)[:, :, None]


def run_adaptive(truth: Truth, rule: Rule, n_seeds: int, rng: np.random.Generator,
                 candidates: list[int] | None = None, d50s: np.ndarray | None = None) -> Search:
    """One simulated adaptive search of two warm-ups (X, then the baseline Y) in one group, or with
    d50s (2, L) true D50s, in one group per lr (the same slope); a seed's latent at a depth is shared
    by both warm-ups and every lr."""
    cand = candidates or list(range(RANGE[0], RANGE[1] + 1))
    d50s = np.array([[truth.d50[0]], [truth.d50[1]]]) if d50s is None else d50s
    L = d50s.shape[1]
    u = rng.standard_normal((1, 1, len(cand), n_seeds))
    z = math.sqrt(RHO) * u + math.sqrt(1 - RHO) * rng.standard_normal((2, L, len(cand), n_seeds))
    p = np.stack([[logistic(np.array(cand), d, truth.slope) for d in arm] for arm in d50s])  # (2, L, C)
    trained = sps.norm.cdf(z) < p[..., None]
    groups = [(f"sim lr {i}", float(i), ("sim",)) for i in range(L)]
    search = Search(Layout(cand, n_seeds, groups, ["X", "Y"], 1, rule))
    while points := search.next_round():
        for g, d, s in points:
            for w in range(2):
                search.absorb((g, d, s), w, "trained" if trained[w, g, d, s] else "untrained")
    search.judge()
    return search


def fit(depths: list[int], trained: np.ndarray, seeds: int) -> stats.Depth50:
    return stats.depth50(depths, list(trained), seeds, stats.span(list(RANGE)))


def run_grid(truth: Truth, target: float, max_seeds: int, rng: np.random.Generator
             ) -> tuple[int, list[stats.Depth50], bool]:
    """Seeds one after another on the grid until both D50 intervals are at most `target` wide."""
    from elrbench.adaptive import STOP_CONFIDENCE, width

    depths = np.array(GRID)
    trained = outcomes(truth, depths, max_seeds, rng)
    for n in range(2, max_seeds + 1, 2):  # seeds two at a time (the fits are what costs)
        ds = [int(d) for d in depths for _ in range(n)]
        fits = [fit(ds, trained[w, :, :n].reshape(-1), n) for w in range(2)]
        if all(width(f, STOP_CONFIDENCE) <= target for f in fits):
            return 2 * n * len(depths), fits, True
    return 2 * max_seeds * len(depths), fits, False


TRUTHS = [Truth("slope -12, D50 X 21 / Y 15", (21.0, 15.0), -12.0),
          Truth("slope -6, D50 X 21 / Y 15", (21.0, 15.0), -6.0),
          Truth("slope -30, D50 X 12.5 / Y 9", (12.5, 9.0), -30.0)]


def _widths(rows, baseline: str) -> tuple[dict[tuple[str, float], float], list[str]]:
    """Each arm's 95% D50 interval width (inf: open or not identified) and the verdict lines."""
    from elrbench.adaptive import width
    from elrbench.report import headline
    from elrbench.tables import trainable_depths

    depths = trainable_depths(rows, baseline)
    return ({(t.warmup, lr): width(f) for d in depths for t in d.rows for lr, f in t.by_lr.items()},
            headline(depths))


def real(grid_dir: str, adaptive_dir: str) -> None:
    """The real network: the adaptive study against its grid counterpart, and against the grid cut to
    its first n seeds (n = 1..10), at equal trial counts and at equal widths."""
    from elrbench.store import StudyStore

    g_store, a_store = StudyStore.open(grid_dir), StudyStore.open(adaptive_dir)
    grid, adaptive = g_store.results(), a_store.results()
    base = a_store.baseline()
    a_w, a_verdict = _widths(adaptive, base)
    print(f"adaptive study {a_store.root.name}: {len(adaptive)} trials; grid study {g_store.root.name}: {len(grid)}")
    print("| design | trials | arms with an interval narrower than the grid's 10 seeds | median width (layers), "
          "finite ones | arms with a finite interval |")
    print("| --- | --- | --- | --- | --- |")
    full_w, _ = _widths(grid, base)
    rows = []
    for n in range(2, 11):
        sub = [r for r in grid if r.seed < n]
        w, verdict = _widths(sub, base)
        rows.append((n, len(sub), w, verdict))
    for label, n_trials, w in [("adaptive", len(adaptive), a_w)] + [(f"grid, seeds < {n}", k, w)
                                                                    for n, k, w, _ in rows]:
        finite = [v for v in w.values() if math.isfinite(v)]
        narrower = sum(w.get(k, math.inf) <= full_w.get(k, math.inf) for k in full_w)
        print(f"| {label} | {n_trials} | {narrower} of {len(full_w)} | "
              f"{np.median(finite) if finite else math.nan:.1f} | {len(finite)} of {len(w)} |")
    equal_trials = min(rows, key=lambda r: abs(r[1] - len(adaptive)))
    a_med = np.median([v if math.isfinite(v) else 1e9 for v in a_w.values()])
    equal_width = next((r for r in rows if np.median([v if math.isfinite(v) else 1e9 for v in r[2].values()])
                        <= a_med), None)
    print(f"\nat equal trials: the grid with {equal_trials[0]} seeds ({equal_trials[1]} trials)")
    if equal_width:
        print(f"at equal median width: the grid needs {equal_width[0]} seeds ({equal_width[1]} trials), "
              f"adaptive / grid = {len(adaptive) / equal_width[1]:.2f}")
    else:
        print("at equal median width: not reached by the grid with 10 seeds")
    print("\nverdict, adaptive:\n  " + "\n  ".join(a_verdict))
    print("verdict, grid (10 seeds):\n  " + "\n  ".join(rows[-1][3]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--width", type=float, default=4.0)
    ap.add_argument("--real", nargs=2, metavar=("GRID_DIR", "ADAPTIVE_DIR"),
                    help="compare two finished studies of the real network instead")
    args = ap.parse_args()
    if args.real:
        real(*args.real)
        return
    reps = args.reps or (25 if args.quick else 100)
    t0 = time.perf_counter()
    rule = Rule(args.width, None, 5, 600)
    print(f"trials to a D50 interval at most {args.width:g} layers wide (both warm-ups), range {RANGE}, "
          f"{reps} replications")
    print("| truth | adaptive trials | reached | grid trials | reached | adaptive / grid (medians) | coverage of "
          "the 95% D50 intervals at the stop: adaptive | grid | adaptive, difference |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, truth in enumerate(TRUTHS):
        rng = np.random.default_rng(100 + i)
        a_n, a_ok, g_n, g_ok, cov, dcov, gcov = [], 0, [], 0, [0, 0], [0, 0], [0, 0]
        for _ in range(reps):
            s = run_adaptive(truth, rule, 10, rng)
            a_n.append(s.issued)
            a_ok += all(a.done for a in s.arms)
            for a, t in zip(s.arms, truth.d50):
                f = a.fit
                if f.value is not None:
                    cov[1] += 1
                    cov[0] += f.lo <= t <= f.hi
            d = s.arms[0].difference
            if d is not None and d.has_interval:
                dcov[1] += 1
                dcov[0] += d.lo <= truth.d50[0] - truth.d50[1] <= d.hi
            n, fits, ok = run_grid(truth, args.width, 40, rng)
            for f, t in zip(fits, truth.d50):
                if f.value is not None:
                    gcov[1] += 1
                    gcov[0] += f.lo <= t <= f.hi
            g_n.append(n)
            g_ok += ok
        qa, qg = np.percentile(a_n, [25, 50, 75]), np.percentile(g_n, [25, 50, 75])
        print(f"| {truth.name} | {qa[1]:.0f} [{qa[0]:.0f}, {qa[2]:.0f}] | {a_ok / reps:.0%} | {qg[1]:.0f} "
              f"[{qg[0]:.0f}, {qg[2]:.0f}] | {g_ok / reps:.0%} | {qa[1] / qg[1]:.2f} | "
              f"{cov[0] / max(cov[1], 1):.1%} | {gcov[0] / max(gcov[1], 1):.1%} | "
              f"{dcov[0] / max(dcov[1], 1):.1%} |", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

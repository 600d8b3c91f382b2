"""The adaptive depth search: rounds of trials placed where they tell most about each arm's D50.

An arm is every grid combination but depth and seed (workload x lr x optimizer x warm-up x
schedule). The arms that differ only by warm-up form a group; every trial of a group runs under
each of its warm-ups at the same depth and seed, so the comparison with the baseline stays paired
by seed. Each round chooses, for every group not yet done, `round_size` depths from the outcomes of
the earlier rounds only:
- round 0: depths spread evenly in log depth over the searched range, both ends included;
- later rounds: the psi rule (Kontsevich & Tyler, Vision Res. 39 (1999) 2729): the depth whose
  outcome is expected to lower the entropy of the posterior of (log2 D50, slope) the most, summed
  over the group's arms that are not done, under the verdict's own model (logit P(trained) = b (log2
  depth - m), on the descending limb, elrbench/stats.py) with flat priors on m and log |b|. The
  depths of one round are chosen greedily, each after folding the expected outcome of the ones
  before into the posterior, so a round spreads where one depth alone would not tell enough.
Each depth goes to the seed least used in the group that has not yet run at that depth, so every
trial is a (depth, seed) point of the grid and its id says which.

An arm is done when its D50 interval (at STOP_CONFIDENCE) is at most search.target_width layers wide and its difference
to the baseline at most target_difference (those given), when its interval lies wholly outside the
searched range, or when another lr of the same warm-up has a D50 clearly above it (it cannot be
that warm-up's best lr). A group runs until all its arms are done, its depths and seeds are used up,
or the study's budget (max_trials) is spent; the last round is admitted pick by pick, one per group
in turn, while the budget lasts.

The trials are a function of the outcomes only, never of timing: a round starts when every trial
of the previous round has an outcome, so the same study on 2 CPUs or 200 GPUs, or interrupted and
resumed, runs the same trials; the design is replayed from the study folder whenever it starts. A
round with a failed trial (an infrastructure failure, not an outcome) ends the search until a
rerun (`elrbench resume`) has retried it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from elrbench import stats
from elrbench.stats import special  # (scipy.special, imported on first use)

# The design's prior and grid (not the verdict's: that one is the profile likelihood of stats.py):
# log2 D50 in steps of 0.05 over the searched range, and |slope| from 0.3 to 300 per doubling of
# depth, flat in log |slope| (from a curve that takes three doublings to fall to a step function).
DESIGN_M_STEP = 0.05
DESIGN_SLOPES = -np.geomspace(0.3, 300.0, 25)


def spread_depths(candidates: Sequence[int], k: int) -> list[int]:
    """k depths (positions in candidates) evenly spread in log depth, both ends included; the same
    depth may come twice when there are fewer candidates than k (it then runs on two seeds)."""
    c = np.log2(np.asarray(candidates, dtype=np.float64))
    targets = np.linspace(c[0], c[-1], k)
    return [int(np.abs(c - t).argmin()) for t in targets]


class Posterior:
    """The design's posterior over (log2 D50, slope) of one arm, on a grid, from counts at the
    candidate depths."""

    def __init__(self, x: np.ndarray, k: np.ndarray, n: np.ndarray, rng: tuple[float, float]) -> None:
        self.m = np.arange(rng[0], rng[1] + 1e-9, DESIGN_M_STEP)
        z = DESIGN_SLOPES[None, :, None] * (x[None, None, :] - self.m[:, None, None])  # (M, B, C)
        self.p = special.expit(z)
        kk, nn = stats.descending_limb(k[None, :].astype(np.float64), n[None, :].astype(np.float64))
        ll = (np.tensordot(special.log_expit(z), kk[0], axes=([2], [0]))
              + np.tensordot(special.log_expit(-z), nn[0] - kk[0], axes=([2], [0])))
        self.w = np.exp(ll - ll.max())
        self.w /= self.w.sum()

    @staticmethod
    def _entropy(joint: np.ndarray) -> np.ndarray:
        """Entropy of (M, B, C) unnormalized weights over (m, slope), for each C. The joint entropy, not
        that of m alone: the rule for m alone (Prins 2013) put the trials at the edge, where the slope
        stays unknown, and the D50 interval covered 90% at a fixed budget against 95% with the joint
        one (benchmarks/adaptive.py, 60 replications)."""
        pm = joint.reshape(-1, joint.shape[-1])
        pm = pm / np.maximum(pm.sum(axis=0, keepdims=True), 1e-300)
        return -(special.xlogy(pm, pm)).sum(axis=0)

    def gains(self) -> tuple[np.ndarray, np.ndarray]:
        """(expected entropy drop of (log2 D50, slope), predicted P(trained)) at each candidate depth."""
        w = self.w[:, :, None]
        q = (w * self.p).sum(axis=(0, 1))
        now = self._entropy(self.w[:, :, None])[0]
        after = q * self._entropy(w * self.p) + (1 - q) * self._entropy(w * (1 - self.p))
        return now - after, q

    def expect(self, c: int, q: float) -> None:
        """Fold in the expected outcome at candidate c (q trained out of 1): a round's next depth is
        chosen as if this one's outcome were known to be as predicted."""
        self.w = self.w * self.p[:, :, c] ** q * (1 - self.p[:, :, c]) ** (1 - q)
        self.w /= self.w.sum()


def choose_depths(candidates: Sequence[int], counts: Sequence[tuple[np.ndarray, np.ndarray]],
                  available: np.ndarray, picks: int, rng: tuple[float, float]) -> list[int]:
    """`picks` candidate positions (repeats allowed while a depth has seeds left) for one group: the
    psi rule summed over its active arms' posteriors, greedy within the round. counts: per
    active arm, (trained, run) at each candidate depth; available: seeds left at each depth."""
    x = np.log2(np.asarray(candidates, dtype=np.float64))
    posts = [Posterior(x, k, n, rng) for k, n in counts]
    left = np.asarray(available, dtype=np.int64).copy()
    out: list[int] = []
    for _ in range(picks):
        if not (left > 0).any():
            break
        total, qs = np.zeros(len(x)), []
        for p in posts:
            g, q = p.gains()
            total += g
            qs.append(q)
        total = np.where(left > 0, total, -np.inf)
        c = int(np.argmax(total))  # ties: the shallowest (argmax takes the first)
        out.append(c)
        left[c] -= 1
        for p, q in zip(posts, qs):
            p.expect(c, float(q[c]))
    return out


# ---------------------------------------------------------------- arms and the stopping rule
# The level of the D50 interval the stopping rule measures (the verdict prints 95%): stopping when the
# 95% interval is narrow enough stops on the rounds whose outcomes happen to look separated, and the
# printed interval then covered 89-91%; measured at 99%, it covers 96% (benchmarks/adaptive.py).
STOP_CONFIDENCE = 0.99
@dataclass(frozen=True)
class Rule:
    target_width: Optional[float]
    target_difference: Optional[float]
    round_size: int
    max_trials: int

    @classmethod
    def of(cls, search) -> Rule:
        """The rule of a spec's search section."""
        return cls(search.target_width, search.target_difference, search.round_size, search.max_trials)

    def text(self) -> str:
        parts = [f"each arm's D50 interval (at {STOP_CONFIDENCE:.0%}) is at most {self.target_width:g} layers wide"
                 if self.target_width else "",
                 f"its difference to the baseline (95%) at most {self.target_difference:g} layers wide"
                 if self.target_difference else ""]
        stop = " and ".join(p for p in parts if p) or "no target width"
        return f"{self.round_size} depths per arm a round until {stop}, {self.max_trials} trials at most"


def width(fit: Optional[stats.Depth50], confidence: Optional[float] = None) -> float:
    """The D50 interval's width in layers (the printed 95% one, or at another confidence);
    infinite while not estimated or open at an end."""
    if fit is None or fit.value is None:
        return math.inf
    lo, hi = (fit.lo, fit.hi) if confidence is None else fit.interval(confidence)
    return math.inf if lo < fit.min_depth or hi > fit.max_depth else hi - lo


def _wide(w: float) -> str:
    return "open" if math.isinf(w) else f"{w:.1f} layers wide"


@dataclass
class Arm:
    """One arm's outcomes and where it stands. depths: positions in the candidates, one per trial
    with an outcome (failed trials are not outcomes)."""

    group: int
    warmup: int
    label: str
    lr: float
    family: tuple  # the arms of one warm-up at every lr share it
    depths: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    trained: list[bool] = field(default_factory=list)
    fit: Optional[stats.Depth50] = None
    fitted: int = -1  # how many outcomes the fit saw (an arm whose group ran nothing new is not refitted)
    difference: Optional[stats.Estimate] = None
    done: bool = False
    why: str = "first round"

    def counts(self, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
        k, n = np.zeros(n_candidates), np.zeros(n_candidates)
        np.add.at(n, self.depths, 1.0)
        np.add.at(k, self.depths, np.asarray(self.trained, dtype=np.float64))
        return k, n

    def status(self) -> str:
        fit = "D50 " + (self.fit.text() if self.fit is not None else "-")
        diff = ("" if self.difference is None or self.difference.value is None
                else f", difference {self.difference.text('.1f', signed=True)}")
        return f"{self.label}: {fit}{diff}, {len(self.depths)} trials; " + ("done: " if self.done else "") + self.why


@dataclass(frozen=True)
class Layout:
    """What the search needs to know of a study: its depths, seeds, arms and rule."""

    candidates: list[int]
    n_seeds: int
    groups: list[tuple[str, float, tuple]]  # per group: label, lr, family key (what the lrs share)
    warmups: list[str]
    baseline: Optional[int]
    rule: Rule


Point = tuple[int, int, int]  # (group, depth position, seed position): one trial under each warm-up


class Search:
    """The rounds of an adaptive search, advanced by outcomes (module docstring)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        c = len(layout.candidates)
        self.arms = [Arm(g, w, f"{label}  {name}", lr, (fam, w)) for g, (label, lr, fam) in enumerate(layout.groups)
                     for w, name in enumerate(layout.warmups)]
        self.used = [[set() for _ in range(c)] for _ in layout.groups]  # seeds run at each depth, per group
        self.seed_uses = [np.zeros(layout.n_seeds, dtype=np.int64) for _ in layout.groups]
        self.rounds: list[list[Point]] = []
        self.issued = 0
        self.finished: Optional[str] = None  # why the search ended

    def group_arms(self, g: int) -> list[Arm]:
        return [a for a in self.arms if a.group == g]

    def absorb(self, point: Point, warmup: int, outcome: str) -> None:
        """The outcome of one trial (trained, untrained, diverged; 'failed' is none)."""
        g, d, s = point
        if outcome == "failed":
            return
        a = self.arms[g * len(self.layout.warmups) + warmup]
        a.depths.append(d)
        a.seeds.append(s)
        a.trained.append(outcome == "trained")

    def judge(self) -> None:
        """Fit every arm and decide which are done."""
        lay = self.layout
        cand, rule = lay.candidates, lay.rule
        rng = stats.span(cand)
        for a in self.arms:
            if a.fitted != len(a.depths):
                a.fit = stats.depth50([cand[d] for d in a.depths], a.trained, len(set(a.seeds)), rng, lr=a.lr)
                a.fitted = len(a.depths)
        for a in self.arms:
            base = (self.arms[a.group * len(lay.warmups) + lay.baseline]
                    if lay.baseline is not None and a.warmup != lay.baseline else None)
            a.difference = (stats.depth50_difference(a.fit, base.fit)
                            if base is not None and a.fit.m is not None and base.fit.m is not None else None)
            f = a.fit
            if f.value is not None and (f.hi <= cand[0] or f.lo >= cand[-1]):
                a.done, a.why = True, f"D50 outside the searched range [{cand[0]}, {cand[-1]}]"
                continue
            better = [r for r in self.arms if r.family == a.family and r is not a and f.value is not None
                      and r.fit.value is not None and r.fit.lo > f.hi]
            if better:
                a.done, a.why = True, f"D50 clearly below that at lr {better[0].lr:g} (not the best lr)"
                continue
            need = []
            w = width(f, STOP_CONFIDENCE)
            if rule.target_width is not None and not w <= rule.target_width:
                need.append(f"D50 interval {_wide(w)}, target {rule.target_width:g}")
            if rule.target_difference is not None and base is not None:
                e = a.difference
                dw = e.hi - e.lo if e is not None and e.has_interval else math.inf
                if not dw <= rule.target_difference:
                    need.append(f"difference interval {_wide(dw)}, target {rule.target_difference:g}")
            if rule.target_width is None and rule.target_difference is None:
                need.append("no target width: runs to the budget")
            a.done, a.why = not need, "; ".join(need) or "interval narrow enough"

    def next_round(self) -> list[Point]:
        """The next round's points, from the outcomes absorbed so far ([] and `finished` set when the
        search is over)."""
        lay = self.layout
        cand, rule, nw = lay.candidates, lay.rule, len(lay.warmups)
        if self.rounds:
            self.judge()
        rng = stats.span(cand)
        picks: dict[int, list[tuple[int, int]]] = {}
        for g in range(len(lay.groups)):
            arms = self.group_arms(g)
            available = np.array([lay.n_seeds - len(u) for u in self.used[g]])
            if all(a.done for a in arms) or not available.any():
                continue
            if not self.rounds:
                depths = spread_depths(cand, rule.round_size)
            else:
                active = [a.counts(len(cand)) for a in arms if not a.done]
                depths = choose_depths(cand, active, available, rule.round_size, rng)
            chosen, used = [], [set(u) for u in self.used[g]]
            uses = self.seed_uses[g].copy()
            for d in depths:  # seeds for this group's picks, in order (admitted as a prefix below)
                free = [s for s in range(lay.n_seeds) if s not in used[d]]
                if not free:
                    continue
                s = min(free, key=lambda s: (uses[s], s))
                used[d].add(s)
                uses[s] += 1
                chosen.append((d, s))
            if chosen:
                picks[g] = chosen
        if not picks:
            self.finished = ("every arm is done" if all(a.done for a in self.arms)
                             else "every depth and seed of the unfinished arms has run")
            return []
        points: list[Point] = []
        for j in range(rule.round_size):  # pick by pick, one group after another, while the budget lasts
            for g, chosen in picks.items():
                if j < len(chosen) and self.issued + nw <= rule.max_trials:
                    d, s = chosen[j]
                    self.used[g][d].add(s)
                    self.seed_uses[g][s] += 1
                    self.issued += nw
                    points.append((g, d, s))
        if not points:
            self.finished = f"the budget of {rule.max_trials} trials is spent"
            return []
        self.rounds.append(points)
        return points


# ---------------------------------------------------------------- a study's search
class Design:
    """The adaptive search of a study: the rounds as trial indices, replayed from the outcomes in the
    study folder. outcome(index) gives a trial's outcome, or None while it has none."""

    def __init__(self, spec) -> None:
        g, s = spec.grid, spec.search
        self.spec = spec
        self.keys = [(w, lr, o, sch) for w in range(len(spec.workloads)) for lr in range(len(g.lr))
                     for o in range(len(g.optimizer)) for sch in range(len(g.schedule))]
        labels = [w.label for w in g.warmup]
        groups = [("  ".join((spec.workloads[w].name, f"lr={g.lr[lr]:g}", g.optimizer[o].label, g.schedule[sch].label)),
                   g.lr[lr], (w, o, sch)) for w, lr, o, sch in self.keys]
        base = labels.index(spec.report.baseline) if spec.report.baseline in labels else None
        self.search = Search(Layout(list(spec.depths), len(g.seed), groups, labels, base,
                                    Rule.of(s)))
        self.pending: list[int] = []  # the current round's trials without an outcome
        self.round_trials: list[tuple[Point, int, int]] = []  # (point, warm-up, index) of the current round
        self.failed: list[int] = []
        self.started = False

    def index(self, point: Point, warmup: int) -> int:
        g, d, s = point
        w, lr, o, sch = self.keys[g]
        return self.spec.index(w, d, lr, o, warmup, sch, s)

    def trials(self) -> list[int]:
        """Every trial index the search has chosen so far, round by round."""
        nw = len(self.spec.grid.warmup)
        return [self.index(p, w) for r in self.search.rounds for p in r for w in range(nw)]

    @property
    def finished(self) -> Optional[str]:
        return self.search.finished

    def advance(self, outcome: Callable[[int], Optional[str]]) -> list[int]:
        """The trials to run now: the current round's that have no outcome yet, or the next round's
        once every trial of the current one has one. [] when the search is over (`finished` says why)."""
        while True:
            if self.started and not self.round_trials:
                return []
            if self.round_trials:
                known = [(p, w, i, outcome(i)) for p, w, i in self.round_trials]
                self.pending = [i for _, _, i, o in known if o is None]
                if self.pending:
                    return self.pending
                self.failed = [i for _, _, i, o in known if o == "failed"]
                for p, w, _, o in known:
                    self.search.absorb(p, w, o)
                if self.failed:
                    self.search.judge()
                    self.search.finished = (f"{len(self.failed)} trial(s) of round {len(self.search.rounds)} failed; "
                                            "`elrbench resume` retries them and continues the search")
                    self.round_trials = []
                    return []
            self.started = True
            nw = len(self.spec.grid.warmup)
            points = self.search.next_round()
            self.round_trials = [(p, w, self.index(p, w)) for p in points for w in range(nw)]

    @property
    def rounds(self) -> int:
        return len(self.search.rounds)

    def results(self, store) -> list:
        """The results of every trial the search chose, round by round (what an executor returns)."""
        return [r for i in self.trials() if (r := store.result(self.spec.trial(i).trial_id)) is not None]

    def status(self) -> list[str]:
        """Each arm's D50 interval and whether it is done."""
        return [a.status() for a in self.search.arms]


def describe(spec) -> str:
    """An adaptive search's range and stopping rule, in words."""
    lo, hi = spec.search.depth
    return f"depths {lo}-{hi} ({len(spec.depths)} allowed), {len(spec.grid.seed)} seeds; {Rule.of(spec.search).text()}"


def outcomes(spec, store, failed_now: Optional[set[int]] = None) -> Callable[[int], Optional[str]]:
    """A trial's outcome from the study folder, None while it has none. A failed trial has none (it
    runs again) unless it failed in this run (an index in failed_now): then the search stops there.
    failed_now None: every failure counts (status and reports show where the search stopped)."""

    def outcome(index: int) -> Optional[str]:
        r = store.result(spec.trial(index).trial_id)
        if r is None or (r.outcome == "failed" and failed_now is not None and index not in failed_now):
            return None
        return r.outcome

    return outcome


def replay(spec, store) -> Design:
    """The design as far as the study folder's outcomes go (for status and reports), every arm judged."""
    d = Design(spec)
    d.advance(outcomes(spec, store))
    if d.rounds:
        d.search.judge()  # refits only arms whose outcomes the last judgment did not see
    return d

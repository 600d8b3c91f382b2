"""The adaptive depth search: its spec section, the design's determinism, resume, stopping and pairing
(pure, on outcomes drawn from a known truth), and real studies on the embedded Ray cluster and inline."""
from __future__ import annotations

import copy
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import yaml

from elrbench.adaptive import Design, Layout, Rule, Search, choose_depths, replay, spread_depths
from elrbench.executors.inline import InlineExecutor
from elrbench.spec import validate_spec
from elrbench.store import StudyStore
from tests.conftest import ROOT, Died, Recorder


def adaptive_spec(base: dict, **search) -> dict:
    d = copy.deepcopy(base)
    d["grid"] = {"lr": [0.1, 0.3], "warmup": ["none", {"name": "linear", "steps": 5}], "seed": list(range(6))}
    d["search"] = {"kind": "adaptive", "depth": [2, 40], "round_size": 4, "target_width": 6, "max_trials": 160,
                   **search}
    return d


def truth(spec, d50: dict[tuple[float, str], float], slope: float = -8.0):
    """Outcomes of a known logistic truth per (lr, warm-up), drawn once per trial index (so any order of
    asking gives the same outcome)."""

    def outcome(i: int) -> str:
        t = spec.trial(i)
        p = 1 / (1 + math.exp(-slope * (math.log2(t.depth) - math.log2(d50[(t.lr, t.warmup.name)]))))
        return "trained" if random.Random(i).random() < p else "untrained"

    return outcome


D50 = {(0.1, "none"): 9.0, (0.1, "linear"): 14.0, (0.3, "none"): 6.0, (0.3, "linear"): 20.0}


def run_design(spec, outcome, order_seed: int | None = None) -> Design:
    """Drive a design to its end; order_seed: outcomes arrive one by one in a shuffled order, and the
    design is asked after each arrival."""
    design = Design(spec)
    known: dict[int, str] = {}
    pending = design.advance(known.get)
    while pending:
        batch = list(pending)
        if order_seed is not None:
            random.Random(order_seed + len(known)).shuffle(batch)
        for i in batch[:-1]:
            known[i] = outcome(i)
            if order_seed is not None:  # a round does not end before its last outcome
                assert design.advance(known.get) == [j for j in pending if j not in known]
        known[batch[-1]] = outcome(batch[-1])
        pending = design.advance(known.get)
    return design


def test_the_trials_are_a_function_of_the_outcomes_not_of_their_order(base_spec):
    s = validate_spec(adaptive_spec(base_spec))
    out = truth(s, D50)
    a, b = run_design(s, out), run_design(s, out, order_seed=3)
    assert a.trials() == b.trials() and a.rounds == b.rounds > 2
    assert len(set(a.trials())) == len(a.trials())  # no trial chosen twice
    # other outcomes, other trials: the design reads them
    c = run_design(s, truth(s, {k: v * 1.6 for k, v in D50.items()}))
    assert c.trials() != a.trials()


def test_a_design_resumed_from_any_round_chooses_the_same_trials(base_spec):
    s = validate_spec(adaptive_spec(base_spec))
    out = truth(s, D50)
    whole = run_design(s, out)
    rounds = [whole.trials()[:n] for n in np.cumsum([len(r) * 2 for r in whole.search.rounds])]
    for k in (1, 2, len(rounds) - 1):
        # the study folder after k rounds, plus half of round k + 1: a fresh design (a resumed study) asks
        # for exactly the rest of round k + 1
        known = {i: out(i) for i in rounds[k - 1]}
        nxt = [i for i in rounds[k] if i not in known]
        known |= {i: out(i) for i in nxt[::2]}
        fresh = Design(s)
        assert fresh.advance(known.get) == [i for i in nxt if i not in known]
        assert fresh.rounds == k + 1


def test_every_warm_up_of_a_group_runs_the_same_depths_and_seeds(base_spec):
    s = validate_spec(adaptive_spec(base_spec))
    design = run_design(s, truth(s, D50))
    points: dict[tuple, set] = {}
    for i in design.trials():
        t = s.trial(i)
        points.setdefault((t.lr, t.warmup.name), set()).add((t.depth, t.seed))
    for lr in s.grid.lr:
        assert points[(lr, "none")] == points[(lr, "linear")]
    # the seeds of one depth differ, and every seed is used
    trials = [s.trial(i) for i in design.trials()]
    assert len({(t.lr, t.depth, t.seed, t.warmup.name) for t in trials}) == len(trials)
    assert {t.seed for t in trials} == set(s.grid.seed)


def test_the_stopping_rule_and_the_budget(base_spec):
    s = validate_spec(adaptive_spec(base_spec))
    design = run_design(s, truth(s, D50, slope=-30.0))  # steep curves: the targets are reached
    assert design.finished == "every arm is done"
    assert len(design.trials()) <= s.search.max_trials
    for a in design.search.arms:
        assert a.done
        assert a.why.startswith(("interval narrow enough", "D50 clearly below", "D50 outside"))
        if a.why.startswith("interval"):
            assert a.fit.hi - a.fit.lo <= 6
    # the round before the last did not stop them all: the rule, not the budget, ended the search
    small = validate_spec(adaptive_spec(base_spec, target_width=0.5, max_trials=40))
    d = run_design(small, truth(small, D50))
    assert d.finished == "the budget of 40 trials is spent" and len(d.trials()) <= 40
    assert not all(a.done for a in d.search.arms)


def test_an_lr_clearly_worse_for_a_warm_up_stops_early(base_spec):
    s = validate_spec(adaptive_spec(base_spec, target_width=0.1))  # never narrow enough
    design = run_design(s, truth(s, {(0.1, "none"): 4.0, (0.1, "linear"): 30.0, (0.3, "none"): 30.0,
                                     (0.3, "linear"): 4.0}, slope=-20.0))
    why = {(a.lr, a.warmup): a.why for a in design.search.arms}
    assert why[(0.1, 0)].startswith("D50 clearly below that at lr 0.3")
    assert why[(0.3, 1)].startswith("D50 clearly below that at lr 0.1")


def test_round_zero_spans_the_range_and_later_rounds_go_where_the_edge_is():
    cand = list(range(4, 33))
    first = spread_depths(cand, 5)
    assert cand[first[0]] == 4 and cand[first[-1]] == 32 and len(set(first)) == 5
    # every trial below 16 trained, every one above did not: the next depths lie around 16
    k, n = np.zeros(len(cand)), np.zeros(len(cand))
    for i in first:
        n[i] += 2
        k[i] += 2 * (cand[i] < 16)
    picks = choose_depths(cand, [(k, n)], np.full(len(cand), 5), 4, (1.0, 6.0))
    assert all(8 < cand[p] < 32 for p in picks), [cand[p] for p in picks]
    # a depth without seeds left is never chosen
    left = np.full(len(cand), 5)
    left[[p for p in picks]] = 0
    assert not set(choose_depths(cand, [(k, n)], left, 4, (1.0, 6.0))) & set(picks)


def test_the_search_on_a_simulated_arm_reaches_its_target_and_covers_the_truth():
    rng = np.random.default_rng(0)
    cand = list(range(4, 33))
    hits, widths = 0, []
    for _ in range(6):
        search = Search(Layout(cand, 10, [("sim", 1.0, ("sim",))], ["X"], None, Rule(6.0, None, 5, 200)))
        while points := search.next_round():
            for g, d, s in points:
                p = 1 / (1 + math.exp(12.0 * (math.log2(cand[d]) - math.log2(18.0))))
                search.absorb((g, d, s), 0, "trained" if rng.random() < p else "untrained")
        (arm,) = search.arms
        assert search.finished == "every arm is done" and search.issued < 100
        widths.append(arm.fit.hi - arm.fit.lo)
        hits += arm.fit.lo <= 18.0 <= arm.fit.hi
    assert max(widths) <= 6 and hits >= 5


@pytest.mark.parametrize("change,message", [
    ({"search": {"kind": "adaptive", "depth": [4, 5], "max_trials": 50}}, "search.depth: [4, 5] holds 2 depths"),
    ({"search": {"kind": "adaptive", "depth": [8, 4], "max_trials": 50}}, "search.depth: give [min, max] with min"),
    ({"search": {"kind": "adaptive", "depth": [4, 40]}}, "search.max_trials: an adaptive search needs a trial budget"),
    ({"search": {"kind": "adaptive", "depth": [4, 40], "max_trials": 3}}, "search.max_trials: 3 is less than the "
                                                                          "first round"),
    ({"search": {"kind": "adaptive", "depth": [1, 40], "max_trials": 50}}, "search.depth: workload"),
    ({"search": {"kind": "grid", "round_size": 3}}, "search.round_size: only for kind: adaptive"),
    ({"search": {"kind": "adaptive", "depth": [4, 40], "max_trials": 50}, "grid": {"depth": [4, 8], "lr": [0.1]}},
     "grid.depth: an adaptive search chooses the depths itself"),
    ({"search": {"kind": "adaptive", "depth": [4, 40], "max_trials": 50, "target_difference": 4}},
     "search.target_difference: needs two warm-ups"),
])
def test_a_bad_search_section_is_one_line_and_exit_2(base_spec, tmp_path, change, message):
    d = copy.deepcopy(base_spec)
    d["grid"].pop("depth")
    d.update(change)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    p = subprocess.run([sys.executable, "-m", "elrbench.cli.app", "validate", str(path)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def small_real(base_spec) -> dict:
    d = adaptive_spec(base_spec, depth=[2, 9], round_size=2, target_width=2, max_trials=16)
    d["grid"].update(lr=[0.1], seed=[0, 1, 2])
    d["budget"].update(steps=6, log_every=3)
    return d


def test_a_real_adaptive_study_on_ray_and_inline_runs_the_same_trials(base_spec, tmp_path):
    # on Ray through the CLI, in a process of its own (an in-process Ray sets RAY_AUTH_MODE for the
    # processes this one starts later)
    path = tmp_path / "adaptive.yaml"
    path.write_text(yaml.safe_dump(small_real(base_spec)))
    p = subprocess.run([sys.executable, "-m", "elrbench.cli.app", "submit", str(path), "--no-report"],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "adaptive search, up to 16 trials" in p.stdout and "round 1: 4 trials" in p.stdout
    assert "adaptive search over:" in p.stdout and "verdict" in p.stdout
    s = validate_spec(small_real(base_spec))
    store = StudyStore.open(s.study_dir)
    ray_rows = sorted(store.results(), key=lambda r: r.trial_id)
    # the study folder holds exactly the trials its design, replayed from the outcomes, chose
    assert sorted(s.trial(i).trial_id for i in replay(s, store).trials()) == [r.trial_id for r in ray_rows]
    inline_spec = validate_spec({**small_real(base_spec), "output_dir": str(tmp_path / "inline")})
    inline_rows = sorted(InlineExecutor().run(inline_spec, StudyStore.create(inline_spec)), key=lambda r: r.trial_id)
    assert [r.trial_id for r in ray_rows] == [r.trial_id for r in inline_rows]
    assert [r.final_test_acc for r in ray_rows] == [r.final_test_acc for r in inline_rows]
    assert 8 <= len(ray_rows) <= 16
    # status shows each arm's interval and whether it is done
    p = subprocess.run([sys.executable, "-m", "elrbench.cli.app", "status", str(s.study_dir)], capture_output=True,
                       text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "adaptive search (depths 2-9" in p.stdout and "over:" in p.stdout
    assert p.stdout.count("lr=0.1") >= 2 and "D50" in p.stdout
    # the report says it was an adaptive search, with its rule, and counts the trials at each depth
    from elrbench.report import build, from_store

    rep = build(from_store(StudyStore.open(s.study_dir)), tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Adaptive search" in html and "16 trials at most" in html
    assert any("trials at each depth" in f.caption for f in rep.figures)


class DiesOnce(Recorder):
    """A trial's process dies at its first progress report after `after` trials finished."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.fired = after, False

    def progress(self, trial_id: str, step: int, total: int) -> None:
        if len(self.finished) >= self.after and not self.fired:
            self.fired = True
            raise Died
        super().progress(trial_id, step, total)


def test_an_interrupted_adaptive_study_resumes_where_it_stopped(base_spec, tmp_path):
    whole_spec = validate_spec({**small_real(base_spec), "output_dir": str(tmp_path / "whole")})
    whole = InlineExecutor().run(whole_spec, StudyStore.create(whole_spec))
    s = validate_spec(small_real(base_spec))
    store = StudyStore.create(s)
    events = DiesOnce(after=9)  # in the second round
    first = InlineExecutor().run(s, store, events)
    assert any(r.outcome == "failed" for r in first) and len(first) < len(whole)
    again = InlineExecutor().run(s, StudyStore.create(s), Recorder())
    assert [r.trial_id for r in again] == [r.trial_id for r in whole]
    assert all(r.outcome != "failed" for r in again)

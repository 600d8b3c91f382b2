"""Large studies: what the driver keeps per trial, and work that must not grow with the study
(the speed itself is benchmarks/scale.py's)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from array import array

from rich.console import Console
from rich.progress import Progress

from elrbench.result import TrialResult
from elrbench.spec import TrialSpec, validate_spec
from elrbench.store import StudyStore
from tests.conftest import live


def _grid(base_spec, **grid) -> dict:
    base_spec["workloads"] = [{"model": "bn_mlp", "dataset": "digits", "width": 8, "threshold": 0.5},
                              {"model": "plain_cnn", "dataset": "digits", "width": 4, "threshold": 0.5}]
    base_spec["grid"] = {"depth": [2, 3], "lr": [0.1, 1e20], "optimizer": ["sgd", {"name": "adam", "eps": 1e-6}],
                         "warmup": ["none", {"name": "linear", "steps": 3}], "schedule": ["constant", "cosine"],
                         "seed": [0, 7], **grid}
    base_spec["budget"] = {"steps": 2, "batch_size": 32, "log_every": 2, "eval_every": 2}
    return base_spec


def test_trial_ids_are_worked_out_without_building_trials(base_spec):
    s = validate_spec(_grid(base_spec))
    assert s.n_trials == 2 * 2 * 2 * 2 * 2 * 2 * 2
    trials = s.expand()
    assert [s.trial_id(i) for i in range(s.n_trials)] == [t.trial_id for t in trials]
    assert len({t.trial_id for t in trials}) == s.n_trials and [t.index for t in trials] == list(range(s.n_trials))
    # the spec's hash (every trial's study_id) is worked out once; an updated copy is another spec
    assert s.spec_hash() is s.spec_hash()
    other = s.model_copy(update={"name": "u"})
    assert other.spec_hash() != s.spec_hash() and other.trial_id(0) != s.trial_id(0)
    assert other.trial_id(0).rsplit("-", 1)[0] == s.trial_id(0).rsplit("-", 1)[0]  # only the hash differs


def test_pending_trials_are_held_compactly(base_spec):
    from elrbench.executors.inline import InlineExecutor

    base_spec["grid"] = {"depth": [2, 3], "lr": [0.1], "seed": [0, 1, 2]}
    base_spec["budget"] = {"steps": 2, "batch_size": 32, "log_every": 2, "eval_every": 2}
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    assert store.pending(s) == range(6)  # nothing ran: a range, however large the grid
    InlineExecutor().run(s, store)
    assert list(store.pending(s)) == []
    (store.trial_dir(s.trial_id(4)) / "result.json").unlink()
    left = store.pending(s)
    assert isinstance(left, array) and list(left) == [4]


def test_trials_csv_is_in_grid_order_whatever_order_trials_finish(base_spec):
    base_spec["grid"] = {"depth": [2], "lr": [0.1], "seed": list(range(12))}
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    for i in reversed(range(12)):  # the last trial finishes first
        t = s.trial(i)
        extra = {"error": "boom"} if i == 5 else {"final_test_acc": 0.5 + i / 100}
        r = TrialResult.failed(t, "boom") if i == 5 else TrialResult(
            trial_id=t.trial_id, index=i, **t.point(),
            outcome="trained", **extra)
        store.write_result(r)
    store.write_table()
    with open(store.root / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(12))
    assert rows[5]["error"] == "boom" and rows[4]["error"] == "" and rows[4]["final_test_acc"] == "0.54"
    assert [json.loads((store.trial_dir(r["trial_id"]) / "result.json").read_text())["index"] for r in rows] \
        == list(range(12))


def test_the_progress_display_keeps_no_result(base_spec):
    from cli.submit import ProgressBar

    s = validate_spec(_grid(base_spec))
    console = Console(file=open("/dev/null", "w"), force_terminal=False)
    with Progress(console=console) as bar:
        events = ProgressBar(bar, lambda total, done: f"{total} trials", 0.0)
        events.planned(s.n_trials, 0)
        before = live(TrialResult)
        for i in range(s.n_trials):
            t = s.trial(i)
            events.trial_started(t.trial_id)
            events.trial_finished(TrialResult.failed(t, "x") if i % 3 else TrialResult(
                trial_id=t.trial_id, index=i, **t.point(), outcome="diverged"))
        assert live(TrialResult) == before  # counted, not kept
        assert events.outcomes == {"failed": 85, "diverged": 43} and not events.running
    assert live(TrialSpec) < 10


def test_the_end_of_a_run_reads_briefs_that_give_the_same_tables(base_spec):
    from elrbench.executors.inline import InlineExecutor
    from elrbench.report import headline
    from elrbench.result import Brief
    from elrbench.tables import by_depth, trainable_depths

    base_spec["grid"] = {"depth": [2, 3], "lr": [0.1, 0.5], "warmup": ["none", "critical"], "seed": [0, 1]}
    base_spec["budget"] = {"steps": 4, "batch_size": 32, "log_every": 2, "eval_every": 4}
    s = validate_spec(base_spec)
    store = StudyStore.create(s)
    briefs = InlineExecutor().run(s, store, brief=True)
    full = store.results()
    assert all(type(b) is Brief for b in briefs) and [b.trial_id for b in briefs] == [r.trial_id for r in full]
    assert all(getattr(b, f) == getattr(r, f) for b, r in zip(briefs, full) for f in Brief.__dataclass_fields__)
    assert [g.cells for g in by_depth(briefs)] == [g.cells for g in by_depth(full)]
    verdict = headline(trainable_depths(full, "none"))
    assert verdict and headline(trainable_depths(briefs, "none")) == verdict
    assert (store.root / "trials.csv").read_text().count("\n") == 1 + s.n_trials  # written on the way


def test_the_cli_starts_without_scipy():
    """What every command pays before doing anything: scipy (0.7 s) comes only with the first
    interval worked out; the statistics still use it then."""
    code = ("import sys; import elrbench.cli.app; assert 'scipy' not in sys.modules, 'scipy at start'; "
            "from elrbench import stats; e = stats.wilson(5, 10); assert 'scipy.stats' in sys.modules; print(e.lo)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert abs(float(out.stdout) - 0.2366) < 1e-4  # Wilson's 95% interval of 5 in 10: 0.2366 to 0.7634

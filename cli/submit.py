from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from elrbench.adaptive import describe
from elrbench.errors import UsageError
from elrbench.executors import EXECUTORS, Events, Executor, create_executor, preflight
from elrbench.result import TrialResult
from elrbench.spec import TRIAL_RUNS_MAX, check_machine, load_spec
from elrbench.store import StudyStore, check_output_dir
from elrbench.workloads import UnknownNameError

from .common import command, console, fail, format_counts, outcome_counts, print_by_depth, print_verdict
from .validate import OVERRIDES

EXECUTOR = typer.Option("ray", help="where trials run: ray (Ray Tune on an embedded local cluster on 127.0.0.1, "
                                    "or the cluster at --address) or inline (one after another in this process)",
                        metavar="|".join(EXECUTORS.names()))
REPORT = typer.Option(True, help="write the report (STUDY_DIR/report/report.html, and the W&B summary run) "
                                  "at the end; `elrbench report` makes it any time")
ADDRESS = typer.Option(None, help="an existing Ray cluster's address, e.g. ray://head:10001 or 127.0.0.1:6379 "
                                  "(default: start a local one on 127.0.0.1)")


@command
def submit(
    spec: Path = typer.Argument(..., help="study spec"),
    overrides: list[str] = OVERRIDES,
    executor: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    report: bool = REPORT,
    detach: bool = typer.Option(False, help="submit the study as a Ray job to the cluster at --address (its job "
                                            "server, e.g. http://head:8265) and return its id at once"),
) -> None:
    """Run a study: every trial of the grid, skipping those already finished in its folder."""
    ex = _executor(executor, address, detach)
    s = load_spec(spec, overrides or [])
    if detach:
        if not address or executor != "ray":
            fail("--detach needs --address: the job server of a running Ray cluster, e.g. http://127.0.0.1:8265")
        from elrbench.executors.ray import submit_job

        job = submit_job(s, address)
        console.print(f"submitted job {job} to {address}: study {s.study_id} -> {s.study_dir} (on the cluster)",
                      highlight=False, soft_wrap=True)
        console.print(f"  follow: elrbench status {job} --address {address}; elrbench logs {job} --address "
                      f"{address}\n  cancel: elrbench stop {job} --address {address}", highlight=False, soft_wrap=True)
        return
    ex.check(s)
    check_output_dir(s)
    preflight(s)
    run_study(s, StudyStore.create(s), ex, report, "submit")


@command
def resume(
    study_dir: Path = typer.Argument(..., help="study folder printed by `elrbench submit`"),
    executor: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    report: bool = REPORT,
) -> None:
    """Finish a study whose driver died: reruns nothing that finished; unfinished trials continue
    from their last checkpoint."""
    ex = _executor(executor, address)
    store = StudyStore.open(study_dir)
    s = store.spec()
    if store.meta().get("spec_hash") != s.spec_hash():
        fail(f"{store.root / 'spec.yaml'}: does not match study.json (edited?); restore it or submit a new study")
    check_machine(s, str(store.root / "spec.yaml"))  # trials start here: the data must be on this machine
    ex.check(s)
    preflight(s)
    run_study(s, store, ex, report, "resume")


def _executor(name: str, address: Optional[str], detach: bool = False) -> Executor:
    if address and name == "ray" and not detach:  # (a detached study goes to the job server's HTTP address)
        from elrbench.executors.ray import check_address

        check_address(address)
    try:
        return create_executor(name, address)
    except UnknownNameError as e:
        raise UsageError(f"--executor: {e}") from None


class ProgressBar(Events):
    """Live progress of a study: a bar of trials and one of the running trial's steps; in logs and CI
    (no terminal) one line per finished trial instead."""

    def __init__(self, bar: Progress, title: Callable[[int, int], str], started: float) -> None:
        self.bar, self.title, self.started = bar, title, started
        self.total = self.done = 0
        self.outcomes: Counter[str] = Counter()  # of the trials finished in this run (nothing kept per trial)
        self.running: set[str] = set()
        self.study = bar.add_task("trials", total=None)
        self.steps = bar.add_task("steps", total=1, visible=False)

    def planned(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        console.print(self.title(total, done), soft_wrap=True)
        self.bar.update(self.study, total=total, completed=done)

    def _describe(self) -> str:
        return f"trials ({format_counts(self.outcomes) or 'none finished'}; {len(self.running)} running)"

    def trial_started(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self.bar.update(self.study, description=self._describe())
        self.bar.update(self.steps, description=f"  {trial_id}", completed=0, total=None, visible=True)

    def progress(self, trial_id: str, step: int, total: int) -> None:
        self.bar.update(self.steps, completed=step, total=total, description=f"  {trial_id}")

    def round_started(self, number: int, trials: int, arms: list[str]) -> None:
        """A round of an adaptive search: the bar's total grows by its trials; each arm's state."""
        self.total = self.done + self.outcomes.total() + trials  # every earlier round has finished
        self.bar.update(self.study, total=self.total)
        console.print(f"round {number}: {trials} trials" + ("" if number == 1 else "; the arms as it starts:"),
                      highlight=False, soft_wrap=True)
        if number > 1:
            for line in arms:
                console.print(Text("  " + line), soft_wrap=True)

    def search_finished(self, why: str, arms: list[str]) -> None:
        console.print(f"adaptive search over: {why}", highlight=False, soft_wrap=True)
        for line in arms:
            console.print(Text("  " + line), soft_wrap=True)

    def trial_finished(self, result: TrialResult) -> None:
        self.running.discard(result.trial_id)
        self.outcomes[result.outcome] += 1
        self.bar.update(self.study, advance=1, description=self._describe())
        if not console.is_terminal:
            acc = result.final_test_acc
            console.print(f"[{self.outcomes.total() + self.done}/{self.total}] {result.trial_id}: {result.outcome}"
                          + (f" test acc {acc:.3f}" if acc is not None else "")
                          + (f", compiled in {result.compile_s:.1f} s" if result.compile_s is not None else "")
                          + f" ({time.time() - self.started:.0f} s elapsed)", highlight=False, soft_wrap=True)


def run_study(s, store: StudyStore, executor: Executor, report: bool = True, command: str = "submit") -> None:
    """Run the unfinished trials with live progress, then print trainability by depth; one at a time
    per study folder."""
    with store.lock(command) as previous:
        if previous:
            console.print(f"note: took over the study folder from `elrbench {previous.get('command')}` (pid "
                          f"{previous.get('pid')} on {previous.get('host')}), which ended without releasing it",
                          soft_wrap=True)
        if s.tracking.wandb != "disabled" and s.tracking.runs == "study":
            console.print(f"W&B: the study's summary run only, no run per trial (tracking.runs: study; auto chooses "
                          f"it above {TRIAL_RUNS_MAX} trials, where a run per trial would cost about "
                          f"{s.max_trials * 94 / 2**20:.1f} GB and {s.max_trials * 0.07 / 60:.0f} core-minutes; "
                          "tracking.runs: trial asks for them)", highlight=False, soft_wrap=True)
        _run_study(s, store, executor, report)


def _run_study(s, store: StudyStore, executor: Executor, report: bool) -> None:
    started = time.time()
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        def title(total: int, done: int) -> str:
            if s.adaptive:
                return (f"study {s.study_id}: adaptive search, up to {total} trials ({done} already finished) on "
                        f"{executor.where()} -> {store.root}\n  {describe(s)}")
            return f"study {s.study_id}: {total} trials ({done} already finished) on {executor.where()} -> {store.root}"

        events = ProgressBar(bar, title, started)
        rows = executor.run(s, store, events, brief=not report)  # without a report: what the tables read
        bar.update(events.steps, visible=False)
    print_by_depth(rows)
    console.print(f"{len(rows)} trials: {outcome_counts(rows)} in {time.time() - started:.0f} s")
    if times := sorted(r.compile_s for r in rows if r.compile_s is not None):
        console.print(f"{len(times)} trials ran compiled steps (resources.compile: {s.resources.compile}); their "
                      f"first step, compiling mostly, took {statistics.median(times):.1f} s (median), "
                      f"{times[-1]:.1f} s at most", highlight=False, soft_wrap=True)
    if rows:
        from elrbench.report import headline
        from elrbench.tables import trainable_depths

        print_verdict(headline(trainable_depths(rows, s.report.baseline)))
    if report and rows:
        from elrbench.report import build, from_store

        from .report import finish_report

        src = from_store(store, None if s.adaptive else rows)  # (a search's rows come round by round)
        finish_report(build(src, store.root / "report"), store, src.rows)
    console.print(f"study folder: {store.root}", soft_wrap=True, highlight=False)
    if any(r.outcome == "failed" for r in rows):
        console.print("some trials failed; see error in their rows (elrbench status) and rerun submit to retry them")
        raise typer.Exit(1)

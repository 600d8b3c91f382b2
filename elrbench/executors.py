"""Executors: where a study's trials run. One interface, one events object, one registry.

Every executor keeps the same contract: finished trials are skipped (so rerunning a study resumes
it), an infrastructure error is recorded as outcome 'failed' with its message, and a diverged
trial is an outcome, not an error. The caller hears of each trial through an Events object.

    inline  one trial after another in this process (no server, cluster or network)
    ray     Ray Tune on an embedded loopback cluster or an existing one (elrbench/study.py)
"""
from __future__ import annotations

import traceback
from typing import ClassVar, Optional

from elrbench.errors import USER_ERRORS, UsageError
from elrbench.result import TrialResult
from elrbench.spec import StudySpec
from elrbench.store import StudyStore
from elrbench.tracking import check_mode
from elrbench.workloads import load_dataset
from elrbench.workloads.registry import Registry


class Events:
    """What an executor reports while a study runs; override what you need (the defaults do nothing).
    Hooks run in the driver's process, never in a trial's."""

    def planned(self, total: int, done: int) -> None:
        """Once, before any trial starts: the study's size and how many trials finished earlier."""

    def trial_started(self, trial_id: str) -> None:
        pass

    def progress(self, trial_id: str, step: int, total: int) -> None:
        pass

    def trial_finished(self, result: TrialResult) -> None:
        pass

    def round_started(self, number: int, trials: int, arms: list[str]) -> None:
        """An adaptive search starts a round of this many trials (the arms' state as it begins)."""

    def search_finished(self, why: str, arms: list[str]) -> None:
        """An adaptive search is over (why), or stopped until it is resumed."""


class Executor:
    """Runs every unfinished trial of a study and returns all results, in grid order."""

    name: ClassVar[str]

    def __init__(self, address: Optional[str] = None) -> None:
        self.address = address

    def check(self, spec: StudySpec) -> None:
        """Refuse (UsageError) what this executor cannot run, before anything starts."""

    def where(self) -> str:
        """Where the trials run, for the study's first line."""
        raise NotImplementedError

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None) -> list[TrialResult]:
        raise NotImplementedError


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def create_executor(name: str, address: Optional[str] = None) -> Executor:
    return EXECUTORS.get(name).fn(address)


def preflight(spec: StudySpec) -> None:
    """Load each workload's data once and check the budget fits it, before anything starts."""
    from elrbench.train import plan

    check_mode(spec.tracking.wandb)
    per_workload = spec.n_trials // len(spec.workloads)  # the grid's first list is the workload
    for k in range(len(spec.workloads)):
        t = spec.trial(k * per_workload)
        plan(t, len(load_dataset(t.workload.dataset, t.workload.data).x_train))


@EXECUTORS.register("inline")
class InlineExecutor(Executor):
    """Trials one after another in this process, on the CPU (or a GPU when the spec asks for one and
    CUDA is there)."""

    def check(self, spec: StudySpec) -> None:
        if self.address:
            raise UsageError("--address goes with --executor ray")
        if spec.resources.workers_per_trial > 1:
            raise UsageError("resources.workers_per_trial: DDP trials need --executor ray; set it to 1 to run inline")

    def where(self) -> str:
        return "inline"

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None) -> list[TrialResult]:
        from elrbench.train import run_trial

        events = events or Events()

        def run(t) -> TrialResult:
            events.trial_started(t.trial_id)
            try:
                result = run_trial(t, store, progress=lambda step, total, row, tid=t.trial_id:
                                   events.progress(tid, step, total))
            except USER_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - an infrastructure failure is recorded, the study goes on
                result = TrialResult.failed(t, f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))
                store.write_result(result)
            events.trial_finished(result)
            store.refresh_table()
            return result

        if spec.adaptive:
            return self._adaptive(spec, store, events, run)
        trials = spec.expand()
        earlier = {t.trial_id: r for t in trials if (r := store.result(t.trial_id)) is not None and r.finished}
        events.planned(len(trials), len(earlier))
        results = [earlier[t.trial_id] if t.trial_id in earlier else run(t) for t in trials]
        store.write_table()
        return results

    @staticmethod
    def _adaptive(spec: StudySpec, store: StudyStore, events: Events, run) -> list[TrialResult]:
        """The rounds of an adaptive search, one trial after another (elrbench/adaptive.py)."""
        from elrbench.adaptive import Design, outcomes

        ran: set[int] = set()
        outcome = outcomes(spec, store, ran)
        design = Design(spec)
        pending = design.advance(outcome)
        events.planned(spec.max_trials, len(design.trials()) - len(pending))
        while pending:
            events.round_started(design.rounds, len(pending), design.status())
            for i in pending:
                ran.add(i)
                run(spec.trial(i))
            pending = design.advance(outcome)
        events.search_finished(design.finished or "", design.status())
        store.write_table()
        return design.results(store)


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray Tune: an embedded cluster on 127.0.0.1 (no address) or the cluster at the address."""

    def where(self) -> str:
        return f"Ray at {self.address}" if self.address else "an embedded Ray cluster on 127.0.0.1"

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None) -> list[TrialResult]:
        from elrbench.study import run_on_ray  # imports ray: only when a study runs on it

        return run_on_ray(spec, store, events or Events(), address=self.address)

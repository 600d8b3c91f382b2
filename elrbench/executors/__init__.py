"""Executors: where a study's trials run. One interface, one events object, one registry.

Every executor keeps the same contract: finished trials are skipped (so rerunning a study resumes
it), an infrastructure error is recorded as outcome 'failed' with its message, and a diverged
trial is an outcome, not an error. The caller hears of each trial through an Events object.

    inline  one trial after another in this process (no server, cluster or network): executors/inline.py
    ray     Ray Tune on an embedded loopback cluster or an existing one: executors/ray.py, the only
            module that imports Ray

This module is the interface and imports neither: each executor's module is imported when it is
created (create_executor), and imports the interface from here, so the import graph has no circle.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import ClassVar, Optional

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

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None,
            brief: bool = False) -> list[TrialResult]:
        """brief: return each grid study's result as TrialResult.brief() (a tenth of the memory: what
        the trainability tables and the verdict read); an adaptive search returns its results whole."""
        raise NotImplementedError


EXECUTORS: Registry[Callable[[Optional[str]], Executor]] = Registry("executor")


def _lazy(module: str, cls: str) -> Callable[[Optional[str]], Executor]:
    def make(address: Optional[str] = None) -> Executor:
        return getattr(importlib.import_module(f"elrbench.executors.{module}"), cls)(address)

    return make


EXECUTORS.register("inline")(_lazy("inline", "InlineExecutor"))
EXECUTORS.register("ray")(_lazy("ray", "RayExecutor"))


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

"""The inline executor: one trial after another in this process (no server, cluster or network)."""
from __future__ import annotations

import traceback
from typing import Optional

from elrbench.errors import USER_ERRORS, UsageError
from elrbench.executors import Events, Executor
from elrbench.result import TrialResult
from elrbench.spec import StudySpec
from elrbench.store import StudyStore


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

    def run(self, spec: StudySpec, store: StudyStore, events: Optional[Events] = None,
            brief: bool = False) -> list[TrialResult]:
        from elrbench.train import run_trial

        events = events or Events()

        def run(t) -> None:
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

        if spec.adaptive:
            return self._adaptive(spec, store, events, run)
        pending = store.pending(spec)
        events.planned(spec.n_trials, spec.n_trials - len(pending))
        for i in pending:
            run(spec.trial(i))
        if brief:
            return store.write_table(briefs=True)
        results = store.results()
        store.write_table(results)
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

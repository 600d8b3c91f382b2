"""The inline executor: runs a study's trials one after another in this process.

It shares its contract with the Ray executor to come: finished trials are skipped (so rerunning a
study resumes it), an infrastructure error is recorded as outcome 'failed' with its message, and a
diverged trial is an outcome, not an error.
"""
from __future__ import annotations

import socket
import traceback
from typing import Any, Callable

from elrbench.errors import USER_ERRORS
from elrbench.results import StudyStore
from elrbench.spec import StudySpec, TrialSpec
from elrbench.tracking import check_mode
from elrbench.train import plan, run_trial
from elrbench.workloads import load_dataset

TrialStart = Callable[[TrialSpec, int], None]


def failed_row(t: TrialSpec, error: str, **extra: Any) -> dict[str, Any]:
    """The result row of a trial that could not run (an infrastructure failure, not an outcome of training)."""
    return {"trial_id": t.trial_id, "index": t.index, **t.point(), "outcome": "failed",
            "threshold": t.workload.threshold, "host": socket.gethostname(), "error": error, **extra}


def preflight(spec: StudySpec) -> None:
    """Load each workload's data once and check the budget fits it, before anything starts."""
    check_mode(spec.tracking.wandb)
    first = {t.workload.name: t for t in spec.expand()}
    for t in first.values():
        plan(t, len(load_dataset(t.workload.dataset, t.workload.data).x_train))


def run_inline(spec: StudySpec, store: StudyStore, *, on_start: TrialStart | None = None,
               on_end: Callable[[dict[str, Any]], None] | None = None, progress=None) -> list[dict[str, Any]]:
    rows = []
    for t in spec.expand():
        if store.finished(t.trial_id):
            rows.append(store.result(t.trial_id))
            continue
        if on_start:
            on_start(t, len(rows))
        try:
            row = run_trial(t, store, progress=progress)
        except USER_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - an infrastructure failure is recorded, the study goes on
            row = failed_row(t, f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))
            store.write_result(row)
        rows.append(row)
        if on_end:
            on_end(row)
    return rows

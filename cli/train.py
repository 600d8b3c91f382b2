from __future__ import annotations

from pathlib import Path

import typer

from elrbench.spec import load_spec
from elrbench.store import StudyStore, check_output_dir
from elrbench.train import run_trial

from .common import command, console, pick_trial
from .validate import OVERRIDES


@command
def train(
    spec: Path = typer.Argument(..., help="study spec"),
    overrides: list[str] = OVERRIDES,
    trial: str = typer.Option(..., "--trial", help="trial id (or a unique prefix, or its index) from `elrbench show`"),
    fresh: bool = typer.Option(False, help="ignore checkpoints left by an earlier run of this trial"),
) -> None:
    """Run one trial inline, printing every logged row (for debugging)."""
    s = load_spec(spec, overrides or [])
    t = pick_trial(s, trial, spec)
    check_output_dir(s)
    store = StudyStore.create(s)
    console.print(f"trial {t.trial_id} -> {store.trial_dir(t.trial_id)}")

    def show(step, total, row):
        console.print(f"step {step}/{total} " + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "step"),
            highlight=False)

    with store.lock("train"):
        r = run_trial(t, store, resume=not fresh, progress=show)
        store.write_table()
    acc = r.final_test_acc
    console.print(f"outcome: {r.outcome}  final test acc: "
                  f"{'n/a' if acc is None else f'{acc:.4f}'} (threshold {r.threshold})  "
                  f"{r.steps_done} steps, {r.step_ms:.1f} ms/step")

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from elrbench.executor import preflight, run_inline
from elrbench.results import StudyStore
from elrbench.spec import load_spec

from .common import command, console, fail, outcome_counts, print_by_depth
from .validate import OVERRIDES


@command
def submit(
    spec: Path = typer.Argument(..., help="study spec"),
    overrides: list[str] = OVERRIDES,
    executor: str = typer.Option("inline", help="where trials run: inline (one after another in this process) "
                                                 "or ray (Ray Tune on an embedded local cluster, or --address)"),
    address: Optional[str] = typer.Option(None, help="with --executor ray: an existing Ray cluster's address "
                                                     "(default: start a local one on 127.0.0.1)"),
) -> None:
    """Run a study: every trial of the grid, skipping those already finished in its folder."""
    if executor not in ("inline", "ray"):
        fail(f"--executor {executor!r}: use inline or ray")
    if address and executor != "ray":
        fail("--address goes with --executor ray")
    s = load_spec(spec, overrides or [])
    trials = s.expand()
    if any(t.resources.workers_per_trial > 1 for t in trials):
        fail("resources.workers_per_trial: trials run one worker each for now (DDP is not built yet); set it to 1")
    preflight(s)
    store = StudyStore.create(s)
    done = sum(store.finished(t.trial_id) for t in trials)
    console.print(f"study {s.study_id}: {len(trials)} trials ({done} already finished) -> {store.root}",
                  soft_wrap=True)
    started = time.time()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        study_task = bar.add_task("trials", total=len(trials), completed=done)
        trial_task = bar.add_task("steps", total=1, visible=False)
        results: list[dict] = []

        def on_start(t, _):
            bar.update(trial_task, description=f"  {t.trial_id}", completed=0, total=None, visible=True)

        def on_step(step, total, row):
            bar.update(trial_task, completed=step, total=total)

        def on_end(row):
            results.append(row)
            bar.update(study_task, advance=1, description=f"trials ({outcome_counts(results)})")
            if not console.is_terminal:  # no live bar in logs and CI: one line per finished trial
                acc = row.get("final_test_acc")
                console.print(f"[{len(results) + done}/{len(trials)}] {row['trial_id']}: {row['outcome']}"
                              + (f" test acc {acc:.3f}" if acc is not None else "")
                              + f" ({time.time() - started:.0f} s elapsed)", highlight=False, soft_wrap=True)

        if executor == "ray":
            from elrbench.study import run_on_ray

            rows = run_on_ray(s, store, address=address,
                              on_start=lambda tid: bar.update(trial_task, description=f"  {tid}", visible=True),
                              on_step=lambda tid, step, total: bar.update(trial_task, description=f"  {tid}",
                                                                          completed=step, total=total),
                              on_end=on_end)
        else:
            rows = run_inline(s, store, on_start=on_start, on_end=on_end, progress=on_step)
        bar.update(trial_task, visible=False)
    print_by_depth(rows)
    console.print(f"{len(rows)} trials: {outcome_counts(rows)} in {time.time() - started:.0f} s")
    console.print(f"study folder: {store.root}", soft_wrap=True)
    if any(r["outcome"] == "failed" for r in rows):
        console.print("some trials failed; see error in their rows (elrbench status) and rerun submit to retry them")
        raise typer.Exit(1)

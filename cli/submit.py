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


EXECUTOR = typer.Option("ray", help="where trials run: ray (Ray Tune on an embedded local cluster on 127.0.0.1, "
                                    "or the cluster at --address) or inline (one after another in this process)")
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
    _check_executor(executor, address)
    s = load_spec(spec, overrides or [])
    if detach:
        if not address or executor != "ray":
            fail("--detach needs --address: the job server of a running Ray cluster, e.g. http://127.0.0.1:8265")
        from elrbench.study import submit_job

        job = submit_job(s, address)
        console.print(f"submitted job {job} to {address}: study {s.study_id} -> {s.study_dir} (on the cluster)",
                      highlight=False, soft_wrap=True)
        console.print(f"  follow: elrbench status {job} --address {address}; elrbench logs {job} --address "
                      f"{address}\n  cancel: elrbench stop {job} --address {address}", highlight=False, soft_wrap=True)
        return
    _check_workers(s, executor)
    preflight(s)
    run_study(s, StudyStore.create(s), executor, address, report)


@command
def resume(
    study_dir: Path = typer.Argument(..., help="study folder printed by `elrbench submit`"),
    executor: str = EXECUTOR,
    address: Optional[str] = ADDRESS,
    report: bool = REPORT,
) -> None:
    """Finish a study whose driver died: reruns nothing that finished; unfinished trials continue
    from their last checkpoint."""
    _check_executor(executor, address)
    store = StudyStore.open(study_dir)
    s = store.spec()
    if store.meta().get("spec_hash") != s.spec_hash():
        fail(f"{store.root / 'spec.yaml'}: does not match study.json (edited?); restore it or submit a new study")
    _check_workers(s, executor)
    preflight(s)
    run_study(s, store, executor, address, report)


def _check_executor(executor: str, address: Optional[str]) -> None:
    if executor not in ("inline", "ray"):
        fail(f"--executor {executor!r}: use ray or inline")
    if address and executor != "ray":
        fail("--address goes with --executor ray")


def _check_workers(s, executor: str) -> None:
    if executor == "inline" and s.resources.workers_per_trial > 1:
        fail("resources.workers_per_trial: DDP trials need --executor ray; set it to 1 to run inline")


def run_study(s, store: StudyStore, executor: str, address: Optional[str], report: bool = True) -> None:
    """Run the unfinished trials with live progress, then print trainability by depth."""
    trials = s.expand()
    done = sum(store.finished(t.trial_id) for t in trials)
    where = {"inline": "inline", "ray": f"Ray at {address}" if address else "an embedded Ray cluster on 127.0.0.1"}
    console.print(f"study {s.study_id}: {len(trials)} trials ({done} already finished) on {where[executor]} "
                  f"-> {store.root}", soft_wrap=True, highlight=False)
    started = time.time()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        study_task = bar.add_task("trials", total=len(trials), completed=done)
        trial_task = bar.add_task("steps", total=1, visible=False)
        results: list[dict] = []
        running: set[str] = set()

        def describe() -> str:
            return f"trials ({outcome_counts(results) or 'none finished'}; {len(running)} running)"

        def on_start(tid: str) -> None:
            running.add(tid)
            bar.update(study_task, description=describe())
            bar.update(trial_task, description=f"  {tid}", completed=0, total=None, visible=True)

        def on_step(tid: str | None, step: int, total: int) -> None:
            bar.update(trial_task, completed=step, total=total, **({"description": f"  {tid}"} if tid else {}))

        def on_end(row: dict) -> None:
            running.discard(row["trial_id"])
            results.append(row)
            bar.update(study_task, advance=1, description=describe())
            if not console.is_terminal:  # no live bar in logs and CI: one line per finished trial
                acc = row.get("final_test_acc")
                console.print(f"[{len(results) + done}/{len(trials)}] {row['trial_id']}: {row['outcome']}"
                              + (f" test acc {acc:.3f}" if acc is not None else "")
                              + f" ({time.time() - started:.0f} s elapsed)", highlight=False, soft_wrap=True)

        if executor == "ray":
            from elrbench.study import run_on_ray

            rows = run_on_ray(s, store, address=address, on_start=on_start, on_step=on_step, on_end=on_end)
        else:
            rows = run_inline(s, store, on_start=lambda t, _: on_start(t.trial_id), on_end=on_end,
                              progress=lambda step, total, row: on_step(None, step, total))
        bar.update(trial_task, visible=False)
    print_by_depth(rows)
    console.print(f"{len(rows)} trials: {outcome_counts(rows)} in {time.time() - started:.0f} s")
    if report and rows:
        from elrbench.render import build, from_store

        from .report import finish_report

        finish_report(build(from_store(store), store.root / "report"), store)
    console.print(f"study folder: {store.root}", soft_wrap=True, highlight=False)
    if any(r["outcome"] == "failed" for r in rows):
        console.print("some trials failed; see error in their rows (elrbench status) and rerun submit to retry them")
        raise typer.Exit(1)

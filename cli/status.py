from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from elrbench.adaptive import describe
from elrbench.store import StudyStore

from .common import command, console, outcome_counts, print_by_depth

LISTED = 20  # failed trials listed one by one


@command
def status(
    study_dir: Path = typer.Argument(..., help="study folder printed by `elrbench submit`, or with --address "
                                               "the job id printed by `elrbench submit --detach`"),
    address: Optional[str] = typer.Option(None, help="the Ray job server of a detached study's cluster"),
) -> None:
    """Show a study's progress: trials finished by outcome, and trainability by depth so far."""
    if address:
        from elrbench.executors.ray import job_info

        info = job_info(address, str(study_dir))
        console.print(f"job {info['job_id']}: {info['status']}"
                      + (f" ({info['message']})" if info.get("message") else "")
                      + (f"; study folder on the cluster: {info['study_dir']}" if info.get("study_dir") else ""),
                      highlight=False, soft_wrap=True)
        return
    store = StudyStore.open(study_dir)
    meta = store.meta()
    rows = store.results()
    adaptive = meta.get("search") == "adaptive"
    console.print(f"study {meta['study_id']}: {len(rows)}/{'up to ' if adaptive else ''}{meta['n_trials']} trials "
                  f"have a result ({outcome_counts(rows)})")
    if adaptive:
        _search(store)
    have = {r.trial_id for r in rows}
    for name in store.trial_names():
        if name in have:
            continue
        # Started, no result yet. A checkpoint is renamed into place before the logs are written, so
        # it, not history.jsonl, says where `elrbench resume` picks the trial up.
        ckpt, w = store.last_checkpoint(name), store.workers(name)
        where = f" (pid {w[0].get('pid', '?')} on {w[0].get('host', '?')})" if w else ""
        state = f"checkpoint at step {ckpt}" if ckpt is not None else "no checkpoint yet"
        console.print(f"  running or interrupted {name}: {state}{where}", highlight=False, soft_wrap=True)
    failed = [r for r in rows if r.outcome == "failed"]
    for r in failed[:LISTED]:
        console.print(f"  failed {r.trial_id}: {r.error}", highlight=False)
    if len(failed) > LISTED:
        console.print(f"  ... and {len(failed) - LISTED} more failed trials (each error is in trials.csv)",
                      highlight=False)
    for path, problem in sorted(store.damaged.items()):
        console.print(f"  damaged {path}: {problem} (left out; `elrbench resume` reruns a trial whose result is "
                      "damaged)", soft_wrap=True, markup=False, highlight=False)
    if rows:
        print_by_depth(rows)


def _search(store: StudyStore) -> None:
    """Where an adaptive search stands: its round, each arm's D50 interval, and whether it is done."""
    from elrbench.adaptive import replay

    spec = store.spec()
    design = replay(spec, store)
    state = f"over: {design.finished}" if design.finished else (
        f"round {design.rounds}, {len(design.pending)} of its trials without an outcome")
    console.print(f"adaptive search ({describe(spec)}): {state}", highlight=False, soft_wrap=True)
    for line in design.status():
        console.print(Text("  " + line), soft_wrap=True)

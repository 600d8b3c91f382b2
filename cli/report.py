from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from elrbench.errors import UsageError
from elrbench.store import StudyStore, printable

from .common import command, console, err_console, print_by_depth, print_verdict


@command
def report(
    study_dir: Optional[Path] = typer.Argument(None, help="study folder printed by `elrbench submit` "
                                                          "(finished or still running)"),
    out: Optional[Path] = typer.Option(None, help="where to write the report (default: STUDY_DIR/report)"),
    trial: list[str] = typer.Option([], "--trial", help="trial id (or unique prefix) to show in detail; repeat"),
    from_wandb: Optional[Path] = typer.Option(None, "--from-wandb", help="build the report from W&B offline "
                                              "run files alone (a study's wandb/ folder)"),
    wandb: bool = typer.Option(True, help="also log the report to W&B as a study-summary run "
                                          "(mode from the study's tracking section)"),
    wandb_report: bool = typer.Option(False, "--wandb-report", help="also save a W&B Report (verdict, tables, "
                                      "panels by warm-up) on the W&B server: needs tracking.wandb: online"),
    baseline: Optional[str] = typer.Option(None, help="the warm-up (as labelled in tables) every other is compared "
                                           "against (default: the spec's report.baseline); with another one, "
                                           "give --out too, so the study's own report stays"),
) -> None:
    """Trainability by depth: tables in the terminal, and report.html, PNG figures, CSV and Markdown tables."""
    from elrbench.report import build, from_store
    from elrbench.report import from_wandb as wandb_source

    if (study_dir is None) == (from_wandb is None):
        raise UsageError("give a study folder or --from-wandb DIR (one of them)")
    store = None
    if wandb_report and from_wandb is not None:
        raise UsageError("--wandb-report goes with a study folder (its spec says where W&B is), not --from-wandb")
    if wandb_report:  # refused before anything is built when the study is not online
        from elrbench.tracking import check_mode

        mode = StudyStore.open(study_dir).spec().tracking.wandb
        if mode != "online":
            raise UsageError(f"--wandb-report: a W&B Report is saved on a W&B server and this study tracks "
                             f"'{mode}'; `wandb sync` its runs, set tracking.wandb: online, and rerun")
        check_mode("online")
    if from_wandb is not None:
        from_wandb = from_wandb.expanduser()
        if not from_wandb.is_dir() or not any(from_wandb.glob("**/offline-run-*/run-*.wandb")):
            raise UsageError(f"--from-wandb {from_wandb}: no W&B offline runs (offline-run-*/run-*.wandb) there")
        out = out or from_wandb / "report"
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise UsageError(f"--from-wandb: {printable(out)} is {'a link' if out.is_symlink() else 'a file'}, "
                             "where the report's folder goes; move it away or give --out")
        src = wandb_source(from_wandb)
    else:
        store = StudyStore.open(study_dir)
        store.check_paths(trials=False)  # the report writes trials.csv and report/ (and reads trials/ through no link)
        src = from_store(store)
        if src.rows and not store.table_is_current(src.rows):
            store.write_table(src.rows)  # trials.csv as of now (a running study rebuilds it every few seconds)
        out = out or store.root / "report"
    if not src.rows:
        raise UsageError(f"{study_dir or from_wandb}: no trial has a result yet; try again when one has finished")
    if baseline is not None:
        labels = list(dict.fromkeys(r.warmup for r in src.rows))
        if baseline not in labels:
            raise UsageError(f"--baseline {baseline!r} is not a warm-up of this study; it has: {', '.join(labels)}")
        src = dataclasses.replace(src, baseline=baseline)
    for w in trial:
        if not any(r.trial_id == w or r.trial_id.startswith(w) for r in src.rows):
            raise UsageError(f"--trial {w!r} matches no trial with a result in {src.title}; see the ids in "
                             "trials.csv or `elrbench status`")
    rep = build(src, out.expanduser(), trial or None)
    print_by_depth(src.rows)
    print_verdict(rep.headline)
    for t in rep.tables:
        if t.kind == "boundary":
            g = t.grid
            console.print(f"{t.title}: " + "; ".join(f"depth {d}: " + ", ".join(
                f"{w} {'-' if g.cells[(d, w)] is None else format(g.cells[(d, w)], 'g')}" for w in g.warmups)
                for d in g.depths), highlight=False, soft_wrap=True)
    for m in rep.machines:
        console.print(Text(f"ran on: {m}", style="dim"), soft_wrap=True)
    for n in rep.notes:
        console.print(n, style="dim", markup=False, highlight=False)
    finish_report(rep, store if wandb else None, src.rows)
    if wandb_report:
        from elrbench.tracking import save_wandb_report

        spec = store.spec()
        url = save_wandb_report(store.meta()["study_id"], spec.tracking, rep.headline,
                                [t for t in rep.tables if t.kind in ("by_depth", "d50")])
        console.print(f"W&B Report: {url}", soft_wrap=True, highlight=False)


def finish_report(rep, store: StudyStore | None, results: list) -> None:
    """Log the report to W&B as the study-summary run (store given; results: every result in the
    study folder, in grid order), and say where it is."""
    if store is not None:
        from elrbench.tracking import log_report

        try:
            spec = store.spec()
            run_id = log_report(store.meta()["study_id"], spec.tracking, store.root, rep.tables, rep.figures,
                                results, make_id=store.run_id)
        except Exception as e:  # noqa: BLE001 - the report is written; W&B is the secondary copy
            err_console.print(f"warning: the W&B study-summary run was not written: {type(e).__name__}: {e}",
                              highlight=False, soft_wrap=True)
            run_id = None
        if run_id:  # (spec is set whenever run_id is)
            console.print(f"W&B ({spec.tracking.wandb}): study-summary run {run_id} under {store.root / 'wandb'}",
                          soft_wrap=True, highlight=False)
    console.print(f"report: {rep.out / 'report.html'} ({len(rep.tables)} tables, {len(rep.figures)} figures)",
                  soft_wrap=True, highlight=False)

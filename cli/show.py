from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.table import Table

from elrbench.adaptive import describe
from elrbench.spec import StudySpec, dump_spec, load_spec

from .common import command, console
from .validate import OVERRIDES

SHOWN = 40  # grid rows shown by default: the first 30 and the last 10


@command
def show(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
         grid_only: bool = typer.Option(False, "--grid", help="print only the trial grid"),
         rows: int = typer.Option(SHOWN, "--rows", min=0, help="trials listed (the first and the last ones); "
                                                                "0: every trial")) -> None:
    """Print the resolved spec (every default filled in) and the trial grid."""
    s = load_spec(spec, overrides or [])
    if not grid_only:
        console.print(Syntax(dump_spec(s), "yaml", background_color="default"))
    if s.adaptive:  # the first round; the later ones depend on its outcomes
        from elrbench.adaptive import Design

        design = Design(s)
        indices: Sequence[int] = design.advance(lambda i: None)
        title = (f"{s.study_id}: an adaptive search of at most {s.max_trials} trials -> {s.study_dir}; its first "
                 f"round ({describe(s)}):")
    else:
        indices = range(s.n_trials)  # never expanded: a 1,000,000-trial grid shows its first and last rows
        title = f"{s.study_id}: {s.n_trials} trials -> {s.study_dir}"
    table = Table(title=title, title_justify="left")
    table.add_column("trial id", overflow="fold")  # shown whole: it is what --trial takes
    for col in ("workload", "depth", "lr", "optimizer", "warm-up", "schedule", "seed"):
        table.add_column(col)
    n = len(indices)
    head, tail = (n, 0) if not rows or n <= rows else (rows - rows // 4, rows // 4)

    def add(i: int) -> None:
        t = s.trial(i)
        p = t.point()
        table.add_row(t.trial_id, p["workload"], str(t.depth), f"{t.lr:g}", p["optimizer"], p["warmup"],
                      p["schedule"], str(t.seed))

    for i in indices[:head]:
        add(i)
    if head + tail < n:
        table.add_row(f"... {n - head - tail} more (--rows 0 lists every trial)", *[""] * 7)
    for i in indices[n - tail:] if tail else ():
        add(i)
    console.print(table)
    if s.resources.compile != "off":
        console.print(compile_line(s, indices), highlight=False, soft_wrap=True)


def compile_line(s: StudySpec, indices: Sequence[int]) -> str:
    """What resources.compile does to these trials (auto: which are long enough to compile). Whether a
    trial compiles depends on its workload only (its steps: the budget over the workload's data), so
    one trial of each workload is planned."""
    from elrbench.compiling import COMPILE_MIN_STEPS
    from elrbench.train import plan
    from elrbench.workloads import load_dataset

    per_workload = s.n_trials // len(s.workloads)  # the workload is the grid's first axis
    compiles = {}
    for k, w in enumerate(s.workloads):
        compiles[k] = plan(s.trial(k * per_workload), len(load_dataset(w.dataset, w.data).x_train)).compile != "off"
    n = sum(compiles[i // per_workload] for i in indices)
    rule = (f"auto compiles trials of at least {COMPILE_MIN_STEPS} steps, where compiling repays itself"
            if s.resources.compile == "auto" else f"{s.resources.compile}: every trial compiles")
    return (f"resources.compile = {rule} (torch.compile; channels-last for convolutional networks): "
            f"{n} of {len(indices)} trials compile, {len(indices) - n} run eager")

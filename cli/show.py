from __future__ import annotations

from pathlib import Path

import typer
from rich.syntax import Syntax
from rich.table import Table

from elrbench.adaptive import describe
from elrbench.spec import dump_spec, load_spec

from .common import command, console
from .validate import OVERRIDES


@command
def show(spec: Path = typer.Argument(..., help="study spec"), overrides: list[str] = OVERRIDES,
         grid_only: bool = typer.Option(False, "--grid", help="print only the trial grid")) -> None:
    """Print the resolved spec (every default filled in) and the trial grid."""
    s = load_spec(spec, overrides or [])
    if not grid_only:
        console.print(Syntax(dump_spec(s), "yaml", background_color="default"))
    if s.adaptive:  # the first round; the later ones depend on its outcomes
        from elrbench.adaptive import Design

        design = Design(s)
        trials = [s.trial(i) for i in design.advance(lambda i: None)]
        title = (f"{s.study_id}: an adaptive search of at most {s.max_trials} trials -> {s.study_dir}; its first "
                 f"round ({describe(s)}):")
    else:
        trials = s.expand()
        title = f"{s.study_id}: {len(trials)} trials -> {s.study_dir}"
    table = Table(title=title, title_justify="left")
    table.add_column("trial id", overflow="fold")  # shown whole: it is what --trial takes
    for col in ("workload", "depth", "lr", "optimizer", "warm-up", "schedule", "seed"):
        table.add_column(col)
    for t in trials:
        p = t.point()
        table.add_row(t.trial_id, p["workload"], str(t.depth), f"{t.lr:g}", p["optimizer"], p["warmup"],
                      p["schedule"], str(t.seed))
    console.print(table)
    if s.resources.compile != "off":
        console.print(compile_line(s, trials), highlight=False, soft_wrap=True)


def compile_line(s, trials) -> str:
    """What resources.compile does to these trials (auto: which are long enough to compile)."""
    from elrbench.compiling import COMPILE_MIN_STEPS
    from elrbench.train import plan
    from elrbench.workloads import load_dataset

    n_train = {w.name: len(load_dataset(w.dataset, w.data).x_train) for w in s.workloads}
    n = sum(plan(t, n_train[t.workload.name]).compile != "off" for t in trials)  # plan() resolves auto
    rule = (f"auto compiles trials of at least {COMPILE_MIN_STEPS} steps, where compiling repays itself"
            if s.resources.compile == "auto" else f"{s.resources.compile}: every trial compiles")
    return (f"resources.compile = {rule} (torch.compile; channels-last for convolutional networks): "
            f"{n} of {len(trials)} trials compile, {len(trials) - n} run eager")

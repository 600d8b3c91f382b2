"""`elrbench compare STUDY_A STUDY_B`: one grid run twice, cell by cell, and whether the verdicts agree."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table as RichTable
from rich.text import Text

from elrbench.errors import UsageError
from elrbench.store import StudyStore

from .common import command, console


@command
def compare(
    study_a: Path = typer.Argument(..., help="a study folder"),
    study_b: Path = typer.Argument(..., help="a study folder of the same grid (another machine, version, cluster)"),
    baseline: str = typer.Option(None, help="the warm-up the verdicts compare against (default: study A's "
                                            "report.baseline)"),
) -> None:
    """Compare two runs of one grid: per cell B - A with 95% intervals (paired by trial), the machines, and
    whether the two runs' verdicts (each warm-up against the baseline) agree."""
    from elrbench.compare import compare as compare_runs
    from elrbench.compare import verdict
    from elrbench.report import machines

    a, b = StudyStore.open(study_a), StudyStore.open(study_b)
    ra, rb = a.results(), b.results()
    base = baseline or a.baseline()
    c = compare_runs(ra, rb, base)
    if not c.common:
        raise UsageError(f"{study_a} and {study_b} have no grid point in common: not one grid run "
                         "twice; compare runs of the same spec")
    for name, store, rows in (("A", a, ra), ("B", b, rb)):
        ms = machines(rows) or ["machine not recorded"]
        console.print(Text(f"{name}: {store.root} ({len(rows)} trials): {'; '.join(ms)}"), soft_wrap=True)
    console.print(Text(f"{c.common} trials in both (paired by grid point); {c.only_a} only in A, {c.only_b} only in B"
                       + (f"; {c.other_ids} pairs differ in identity (trial ids: resources.compile or "
                          "workers_per_trial differ)" if c.other_ids else "")), soft_wrap=True)
    for g in dict.fromkeys(d.group for d in c.cells):
        table = RichTable(title=Text(f"B - A: {g.label}"), title_justify="left")
        for col in ("depth", "warm-up", "A", "B", "Δtrained [95%]", "Δacc [95%]"):
            table.add_column(col, justify="left" if col == "warm-up" else "right")
        for d in (d for d in c.cells if d.group == g):
            table.add_row(str(d.depth), Text(d.warmup), d.a, d.b,
                          d.trained.text(".2f", signed=True) + (" *" if d.trained.excludes(0) else ""),
                          d.acc.text(".3f", signed=True) + (" *" if d.acc.excludes(0) else ""))
        console.print(table)
    console.print("cells: trained/finished in A and B; differences B - A over the trials both ran (paired by "
                  "grid point); * marks an interval that excludes 0", style="dim", highlight=False)
    differ = sum(d.differs for d in c.cells)
    console.print(Text(f"{differ} of {len(c.cells)} cells differ beyond their 95% intervals"))
    if not c.verdicts:
        console.print(Text(f"no verdicts to compare: the runs hold no warm-up besides the baseline '{base}'"))
        return
    for v in c.verdicts:
        def d50(t) -> str:
            lr = f" at its best lr {t.best.lr:g}" if len(t.by_lr) > 1 and t.best.lr is not None else ""
            diff = "" if t.difference is None or t.difference.value is None else \
                f", difference {t.difference.text('.1f', signed=True)}"
            return f"D50 {t.best.text()}{lr}{diff}"

        console.print(Text(f"{v.group.label}: {v.warmup} against {base}: A {verdict(v.a)} ({d50(v.a)}), "
                           f"B {verdict(v.b)} ({d50(v.b)}): {'agree' if v.agree else 'DISAGREE'}"),
                      soft_wrap=True)
    console.print(Text("the verdicts agree" if c.agree else "the verdicts disagree", style="bold"))

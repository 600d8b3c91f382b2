"""What every command shares: the consoles, exit codes, and rendering of tables."""
from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from elrbench.errors import USER_ERRORS, TrialNotFound
from elrbench.result import TrialResult
from elrbench.spec import StudySpec, TrialSpec
from elrbench.tables import Table, by_depth

# Markup off: every text elrbench prints may hold a user's names and values, and "[/x]" in a spec must
# print as it is, not crash Rich or vanish; colour comes from Text styles.
console = Console(markup=False, highlight=False)
err_console = Console(stderr=True, markup=False, highlight=False)
STATE = {"debug": bool(os.environ.get("ELRBENCH_DEBUG"))}


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes: one line each on stderr, exit 2. Runtime failures: exit 1. Tracebacks with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as e:
            if STATE["debug"]:
                raise
            for line in str(e).splitlines() or [type(e).__name__]:
                err_console.print(Text.assemble(("error:", "red"), f" {line}"), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the CLI is the one place that turns these into exit codes
            if STATE["debug"]:
                raise
            err_console.print(Text.assemble(("failed:", "red"), f" {type(e).__name__}: {e} (rerun with --debug for "
                                                                 "the traceback)"),
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def print_table(t: Table) -> None:
    """A table in the terminal. Text is never read as markup (a spec's names could hold brackets)."""
    table = RichTable(title=Text(t.title), title_justify="left")
    for col in t.header:
        table.add_column(Text(col), justify="right")
    for row in t.rows:
        table.add_row(*[Text(c) for c in row])
    console.print(table)


def print_by_depth(rows: Iterable[TrialResult]) -> None:
    """Trainability by depth, cells of two lines that fit 80 columns for three warm-ups: trained/finished
    with the 95% Wilson interval of the fraction, then the median final test accuracy with its 95%
    order-statistic interval."""
    for grid in by_depth(rows):
        console.print(Text(f"trainability by depth: {grid.group.label}", style="italic"))  # as wide as the terminal
        table = RichTable()
        table.add_column("depth", justify="right")
        for w in grid.warmups:
            table.add_column(Text(w), justify="right")
        for d in grid.depths:
            table.add_row(str(d), *[Text("\n".join(grid.cells[(d, w)].lines(compact=True))) for w in grid.warmups])
        console.print(table)
    console.print("cells: trained/finished [95% Wilson]; median final accuracy [95% order statistics]", style="dim",
                  highlight=False)


def print_verdict(lines: list[str]) -> None:
    """The report's headline: the trainable depth D50 per warm-up and its difference to the baseline."""
    if lines:
        console.print(Text("verdict (D50: the depth at which P(trained) = 0.5, 95% intervals):", style="bold"))
        for line in lines:
            console.print(Text("  " + line), soft_wrap=True)


def outcome_counts(rows: Iterable[TrialResult]) -> str:
    return format_counts(Counter(r.outcome for r in rows)) or "none yet"


def format_counts(counts: Mapping[str, int]) -> str:
    """Outcome counts as 'diverged 3, trained 12' ('' when there are none)."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)


def fail(message: str) -> None:
    """A user mistake found by the CLI itself."""
    err_console.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
    raise typer.Exit(2)


def pick_trial(spec: StudySpec, trial: Optional[str], source: Path | str = "SPEC") -> TrialSpec:
    """A trial by id, unique id prefix or index (None: the first)."""
    trials = spec.expand()
    if trial is None:
        return trials[0]
    matches = [t for t in trials if t.trial_id == trial] or [t for t in trials if t.trial_id.startswith(trial)]
    if not matches and trial.isdigit() and int(trial) < len(trials):
        matches = [trials[int(trial)]]
    if len(matches) != 1:
        what = "matches no trial" if not matches else f"matches {len(matches)} trials"
        raise TrialNotFound(f"--trial {trial!r} {what} of {spec.study_id}; list them with "
                            f"`elrbench show {source} --grid`")
    return matches[0]

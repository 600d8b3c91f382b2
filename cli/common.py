"""What every command shares: the consoles, exit codes, and rendering of tables."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable

from elrbench.errors import USER_ERRORS, TrialNotFound
from elrbench.result import TrialResult
from elrbench.spec import StudySpec, TrialSpec
from elrbench.tables import Table, by_depth

console = Console()
err_console = Console(stderr=True)
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
                err_console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the CLI is the one place that turns these into exit codes
            if STATE["debug"]:
                raise
            err_console.print(f"[red]failed:[/red] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def print_table(t: Table) -> None:
    table = RichTable(title=t.title, title_justify="left")
    for col in t.header:
        table.add_column(col, justify="right")
    for row in t.rows:
        table.add_row(*row)
    console.print(table)


def print_by_depth(rows: Iterable[TrialResult]) -> None:
    for grid in by_depth(rows):
        print_table(Table.of("by_depth", grid))
    console.print("cells: final test accuracy mean±std over seeds (trained/finished trials)", style="dim")


def outcome_counts(rows: Iterable[TrialResult]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"


def fail(message: str) -> None:
    """A user mistake found by the CLI itself."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
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

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from elrbench.adaptive import describe
from elrbench.spec import load_spec
from elrbench.store import check_output_dir

from .common import command, console

OVERRIDES = typer.Argument(None, help="overrides as dotted.key=value, e.g. budget.steps=50 grid.depth=[4,8]")


@command
def validate(spec: Path = typer.Argument(..., help="study spec (.yaml, .toml or .json)"),
             overrides: list[str] = OVERRIDES) -> None:
    """Check a study spec; print every problem as 'dotted.path: message' (exit 2 if any)."""
    s = load_spec(spec, overrides or [])
    check_output_dir(s)
    size = (f"an adaptive search of at most {s.max_trials} trials ({describe(s)})" if s.adaptive
            else f"{s.n_trials} trials")
    console.print(Text.assemble(("ok", "green"), f" {spec}: study '{s.name}' ({s.study_id}), {size}"))

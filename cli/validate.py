from __future__ import annotations

from pathlib import Path

import typer

from elrbench.spec import load_spec

from .common import command, console

OVERRIDES = typer.Argument(None, help="overrides as dotted.key=value, e.g. budget.steps=50 grid.depth=[4,8]")


@command
def validate(spec: Path = typer.Argument(..., help="study spec (.yaml, .toml or .json)"),
             overrides: list[str] = OVERRIDES) -> None:
    """Check a study spec; print every problem as 'dotted.path: message' (exit 2 if any)."""
    s = load_spec(spec, overrides or [])
    console.print(f"[green]ok[/green] {spec}: study '{s.name}' ({s.study_id}), {len(s.expand())} trials")

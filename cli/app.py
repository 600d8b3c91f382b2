"""elrbench: the Typer app. One module per command; this file only wires them."""
from __future__ import annotations

import sys

import typer

from . import compare, jobs, report, show, status, submit, theory, train, validate
from .common import STATE

app = typer.Typer(
    name="elrbench",
    help="Trainability studies of deep normalized networks: effective learning rates, warm-ups, depth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors")) -> None:
    STATE["debug"] = STATE["debug"] or debug
    if not sys.stdout.isatty():  # logs and CI: each progress line as it happens, not in 8 KiB blocks
        sys.stdout.reconfigure(line_buffering=True)


app.command("validate")(validate.validate)
app.command("show")(show.show)
app.command("train")(train.train)
app.command("submit")(submit.submit)
app.command("resume")(submit.resume)
app.command("status")(status.status)
app.command("report")(report.report)
app.command("compare")(compare.compare)
app.command("logs")(jobs.logs)
app.command("stop")(jobs.stop)
app.add_typer(theory.app, name="theory")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

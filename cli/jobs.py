"""Detached studies on a Ray cluster's job server: `logs` and `stop` (submit --detach and status
--address live with their commands)."""
from __future__ import annotations

import typer

from .common import command, console

JOB_ADDRESS = typer.Option(..., "--address", help="the cluster's job server (dashboard) address, e.g. "
                                                  "http://127.0.0.1:8265")


@command
def logs(job: str = typer.Argument(..., help="job id printed by `elrbench submit --detach`"),
         address: str = JOB_ADDRESS) -> None:
    """Print a detached study's log so far (its progress lines and, at the end, the by-depth table)."""
    from elrbench.executors.ray import job_logs

    console.print(job_logs(address, job), end="", highlight=False, soft_wrap=True, markup=False)


@command
def stop(job: str = typer.Argument(..., help="job id printed by `elrbench submit --detach`"),
         address: str = JOB_ADDRESS) -> None:
    """Cancel a detached study. Finished trials stay in its folder; `elrbench resume` continues it."""
    from elrbench.executors.ray import stop_job

    stopped = stop_job(address, job)
    console.print(f"job {job}: {'stop requested' if stopped else 'was not running'}", highlight=False)

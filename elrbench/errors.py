"""The only exceptions elrbench raises on purpose. The CLI maps UserError to exit 2, the rest to 1."""
from __future__ import annotations

from elrbench.workloads.registry import WorkloadError


class ElrbenchError(Exception):
    """Base of elrbench's own errors."""


class SpecError(ElrbenchError):
    """A study spec that cannot be used; holds every problem found, as (dotted.path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__("\n".join(f"{where}{loc}: {msg}" if loc else f"{where}{msg}" for loc, msg in problems))


class StoreError(ElrbenchError):
    """A study folder that is missing, not a study, or belongs to another spec."""


class TrialNotFound(ElrbenchError):
    pass


class UsageError(ElrbenchError):
    """A command-line option the command cannot use."""


class NoScaleInvariantTensors(ElrbenchError):
    """A model without a weight feeding a normalization layer has no ELRs to measure."""


# Errors caused by what the user gave us (exit 2, nothing started).
USER_ERRORS: tuple[type[Exception], ...] = (SpecError, StoreError, TrialNotFound, UsageError, NoScaleInvariantTensors,
                                             WorkloadError)

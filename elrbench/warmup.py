"""Learning-rate control: the base schedules and the warm-up registry.

A warm-up is a small stateful controller. Each step the training loop asks it for the learning rate,
given the base schedule's value for that step; the controller may look at this step's diagnostics
(set needs_stats) before the optimizer steps. Its state is checkpointed with the trial.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from elrbench.workloads.registry import Registry


class WarmupOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Warmup:
    """Base controller: no warm-up. Subclasses override lr() and, if stateful, the state methods."""

    needs_stats: ClassVar[bool] = False  # does lr() read per-layer statistics of the current step?

    def __init__(self, options: WarmupOptions, total_steps: int) -> None:
        self.options = options
        self.total_steps = total_steps

    def lr(self, step: int, scheduled: float, stats: Any = None) -> float:
        return scheduled

    def in_warmup(self, step: int) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


WARMUPS: Registry[type[Warmup]] = Registry("warm-up")


def warmup_options(name: str, options: dict[str, Any] | None) -> WarmupOptions:
    return WARMUPS.get(name).meta["options"].model_validate(options or {})


def create_warmup(name: str, options: dict[str, Any] | None, total_steps: int) -> Warmup:
    entry = WARMUPS.get(name)
    return entry.fn(warmup_options(name, options), total_steps)


@WARMUPS.register("none", options=WarmupOptions)
class NoWarmup(Warmup):
    pass


class LinearOptions(WarmupOptions):
    steps: int = Field(100, gt=0, description="length of the warm-up in optimizer steps")
    start: float = Field(0.0, ge=0, lt=1, description="starting fraction of the scheduled rate")


@WARMUPS.register("linear", options=LinearOptions)
class LinearWarmup(Warmup):
    """Linear ramp over k steps (Goyal et al. 2017): factor start + (1-start)(t+1)/k, then 1."""

    options: LinearOptions

    def lr(self, step: int, scheduled: float, stats: Any = None) -> float:
        k, s = self.options.steps, self.options.start
        return scheduled * (s + (1 - s) * min(1.0, (step + 1) / k))

    def in_warmup(self, step: int) -> bool:
        return step + 1 < self.options.steps


def scheduled_lr(name: str, lr: float, step: int, total_steps: int, *, milestones=(0.5, 0.75),
                 gamma: float = 0.1, final_fraction: float = 0.0) -> float:
    """The base schedule at a step: constant, step decay at fractions of the budget, or cosine."""
    if name == "constant":
        return lr
    if name == "step":
        # He et al. 2016 divide by 10 at 32k and 48k of 64k iterations: milestones 0.5 and 0.75.
        passed = sum(step >= int(m * total_steps) for m in milestones)
        return lr * gamma**passed
    if name == "cosine":
        progress = min(step / max(total_steps, 1), 1.0)
        return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown schedule '{name}'")

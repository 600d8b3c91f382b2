"""The base learning-rate schedules, one registry entry each: lr(step) given the target rate and the
trial's length. A warm-up (elrbench/warmup.py) acts on top of the schedule's value."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from elrbench.defaults import CONSTANT
from elrbench.workloads.registry import Registry


class ScheduleSpec(Protocol):
    """What a schedule reads of its spec: the fields of elrbench.spec.ScheduleSpec (spec.py imports this
    registry, so this module names the fields, not spec's class)."""

    name: str
    milestones: tuple[float, ...]
    gamma: float
    final_fraction: float


Schedule = Callable[[ScheduleSpec, float, int, int], float]  # (spec, target lr, step, total steps) -> lr
SCHEDULES: Registry[Schedule] = Registry("schedule")  # each entry's meta "options": the spec fields it reads


def scheduled_lr(spec: ScheduleSpec, lr: float, step: int, total_steps: int) -> float:
    """The base schedule's learning rate at a step."""
    return SCHEDULES.get(spec.name).fn(spec, lr, step, total_steps)


@SCHEDULES.register(CONSTANT, options=())
def constant(spec: ScheduleSpec, lr: float, step: int, total_steps: int) -> float:
    return lr


@SCHEDULES.register("step", options=("milestones", "gamma"))
def step_decay(spec: ScheduleSpec, lr: float, step: int, total_steps: int) -> float:
    """Multiply by gamma at each milestone (fractions of the budget). He et al. 2016 divide by 10 at
    32k and 48k of 64k iterations: milestones 0.5 and 0.75, gamma 0.1."""
    passed = sum(step >= int(m * total_steps) for m in spec.milestones)
    return lr * spec.gamma**passed


@SCHEDULES.register("cosine", options=("final_fraction",))
def cosine(spec: ScheduleSpec, lr: float, step: int, total_steps: int) -> float:
    """Half a cosine from lr down to final_fraction * lr over the budget (Loshchilov & Hutter 2017)."""
    progress = min(step / max(total_steps, 1), 1.0)
    f = spec.final_fraction
    return lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * progress)))

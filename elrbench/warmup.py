"""The warm-up registry: learning-rate controllers that act on top of the base schedule
(elrbench/schedules.py). Definitions and sources: docs/definitions.md, sections 6-8.

A warm-up is a small stateful controller. Each step, after backward and before the optimizer
steps, the training loop (or the random-walk simulator) asks it for the learning rate given the
schedule's value; it may read this step's per-layer statistics (needs_stats) or the batch accuracy
(needs_batch_acc). A warm-up may also return per-layer factors for the scale-invariant tensors
(layer_scales), which the loop applies to their gradients: per-layer learning rates without
per-layer optimizer groups. Its state is checkpointed with the trial. Each warm-up says itself
which studies it cannot run in (problems), so the spec needs no rule of its own about it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field

from elrbench import elr
from elrbench.defaults import NO_WARMUP
from elrbench.optimizers import OptimizerSpec, create_optimizer
from elrbench.workloads.registry import Registry

if TYPE_CHECKING:
    from elrbench.diagnostics import Measure

# The study a warm-up's `problems` checks: an elrbench.spec.StudySpec (spec.py imports this registry to
# validate names, so it is not imported back here).
StudySpec = Any


class WarmupOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class StepContext:
    """What a controller may look at in one step. Reading a value onto the host costs a sync."""

    measure: Optional[Measure] = None  # this step's per-layer norms (device tensors), if computed
    batch_acc: Optional[Callable[[], float]] = None  # training accuracy of this step's batch (syncs)
    update_c_hat: Optional[Callable[[], torch.Tensor]] = None  # ||update direction|| / ||W|| per layer


class Warmup:
    """Base controller: no warm-up. Subclasses override lr() and, if stateful, the state methods."""

    needs_stats: ClassVar[bool] = False
    needs_batch_acc: ClassVar[bool] = False

    def __init__(self, options: WarmupOptions, total_steps: int, optimizer: Optional[OptimizerSpec] = None) -> None:
        self.options = options
        self.total_steps = total_steps
        self.optimizer = optimizer

    @classmethod
    def problems(cls, name: str, options: dict[str, Any], study: StudySpec) -> list[str]:
        """Why this warm-up cannot run in (part of) a study; empty when it can."""
        if not cls.needs_stats:
            return []
        out = [f"warm-up '{name}' reads per-layer ELRs, but workload '{w.name}' has norm: none (no "
               "scale-invariant tensors)" for w in study.workloads if w.norm == "none"]
        if not study.diagnostics.enabled:
            out.append(f"warm-up '{name}' needs diagnostics.enabled: true")
        return out

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        return scheduled

    def layer_scales(self, ctx: StepContext) -> torch.Tensor | None:
        return None

    def in_warmup(self, step: int) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


WARMUPS: Registry[type[Warmup]] = Registry("warm-up")


def warmup_options(name: str, options: dict[str, Any] | None) -> WarmupOptions:
    return WARMUPS.get(name).meta["options"].model_validate(options or {})


def create_warmup(name: str, options: dict[str, Any] | None, total_steps: int,
                  optimizer: Optional[OptimizerSpec] = None) -> Warmup:
    return WARMUPS.get(name).fn(warmup_options(name, options), total_steps, optimizer)


@WARMUPS.register(NO_WARMUP, options=WarmupOptions)
class NoWarmup(Warmup):
    pass


class LinearOptions(WarmupOptions):
    steps: int = Field(100, gt=0, description="length of the warm-up in optimizer steps")
    start: float = Field(0.0, ge=0, lt=1, description="starting fraction of the scheduled rate")


def _linear(step: int, k: int, start: float) -> float:
    return start + (1 - start) * min(1.0, (step + 1) / k)


@WARMUPS.register("linear", options=LinearOptions)
class LinearWarmup(Warmup):
    """Linear ramp over k steps (Goyal et al. 2017): factor start + (1-start)(t+1)/k, then 1."""

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        return scheduled * _linear(step, self.options.steps, self.options.start)

    def in_warmup(self, step: int) -> bool:
        return step + 1 < self.options.steps


class ExponentialOptions(WarmupOptions):
    tau: float = Field(100.0, gt=0, description="time constant in steps")


@WARMUPS.register("exponential", options=ExponentialOptions)
class ExponentialWarmup(Warmup):
    """factor 1 - exp(-(t+1)/tau) (the exponential form of Ma & Yarats 2021); 'in warm-up' below 0.99."""

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        return scheduled * (1 - math.exp(-(step + 1) / self.options.tau))

    def in_warmup(self, step: int) -> bool:
        return (step + 1) / self.options.tau < math.log(100)


class HeOptions(WarmupOptions):
    lr: float = Field(0.01, gt=0, description="the warm-up learning rate")
    error: float = Field(0.8, gt=0, lt=1, description="switch once the training error falls below this")


@WARMUPS.register("he_classic", options=HeOptions)
class HeClassicWarmup(Warmup):
    """He et al. 2016 (ResNet-110 on CIFAR): 0.01 until the training error is below 80%, then the
    target. The error is that of the step's mini-batch; the switch is for good."""

    needs_batch_acc = True

    def __init__(self, options: HeOptions, total_steps: int, optimizer: Optional[OptimizerSpec] = None) -> None:
        super().__init__(options, total_steps, optimizer)
        self.done_at: int | None = None

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        if self.done_at is None and ctx is not None and 1 - ctx.batch_acc() < self.options.error:
            self.done_at = step
        return scheduled if self.done_at is not None else min(self.options.lr, scheduled)

    def in_warmup(self, step: int) -> bool:
        return self.done_at is None or step < self.done_at

    def state_dict(self) -> dict[str, Any]:
        return {"done_at": self.done_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done_at = state["done_at"]


class UntunedAdamOptions(WarmupOptions):
    beta2: Optional[float] = Field(None, gt=0, lt=1, description="default: the optimizer's beta2")


@WARMUPS.register("untuned_adam", options=UntunedAdamOptions)
class UntunedAdamWarmup(Warmup):
    """Linear over 2/(1-beta2) steps (Ma & Yarats 2021, 'untuned' warm-up for Adam)."""

    @classmethod
    def problems(cls, name: str, options: dict[str, Any], study: StudySpec) -> list[str]:
        if options.get("beta2") is not None:
            return []
        return [f"untuned_adam takes beta2 from the optimizer, and '{o.name}' has none: set options.beta2"
                for o in study.grid.optimizer if create_optimizer(o).beta2 is None]

    def __init__(self, options: UntunedAdamOptions, total_steps: int,
                 optimizer: Optional[OptimizerSpec] = None) -> None:
        super().__init__(options, total_steps, optimizer)
        beta2 = options.beta2
        if beta2 is None:
            beta2 = create_optimizer(optimizer).beta2 if optimizer else 0.999
        self.steps = max(1, math.ceil(2 / (1 - beta2)))

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        return scheduled * _linear(step, self.steps, 0.0)

    def in_warmup(self, step: int) -> bool:
        return step + 1 < self.steps


class SourceOptions(WarmupOptions):
    source: Literal["gradient", "update"] = Field(
        "gradient", description="c_hat from the gradient, or from the optimizer's update direction "
                                "(momentum buffer / Adam step) that this step will apply")


def source_c_hat(options: SourceOptions, ctx: StepContext) -> torch.Tensor:
    """This step's c_hat per layer, from where the warm-up's `source` option says."""
    return ctx.update_c_hat() if options.source == "update" else ctx.measure.c_hat


class CriticalOptions(SourceOptions):
    ema: float = Field(0.0, ge=0, lt=1, description="EMA factor on c_hat against mini-batch noise (0: off)")
    momentum_correction: bool = Field(
        False, description="use (1 - beta) eta_crit, beta the optimizer's momentum: under heavy-ball momentum a "
                           "step is about 1/(1 - beta) times the gradient's (docs/definitions.md, section 6); "
                           "no effect without momentum")


def momentum_of(optimizer: Optional[OptimizerSpec]) -> float:
    """The heavy-ball momentum beta of the optimizer (0 for plain SGD, Adam and no optimizer)."""
    return float(optimizer.momentum or 0.0) if optimizer is not None else 0.0


@WARMUPS.register("critical", options=CriticalOptions)
class CriticalWarmup(Warmup):
    """Hyper-parameter-free warm-up (docs/definitions.md, section 6): eta_t = min(eta_schedule(t), eta_crit,t),
    eta_crit = 1/sqrt(c_hat_max c_hat_min) (times 1 - beta with momentum_correction), ending for good at
    the first step where eta_crit >= the schedule. Reads two numbers to the host per step while it
    lasts, none afterwards."""

    needs_stats = True

    def __init__(self, options: CriticalOptions, total_steps: int, optimizer: Optional[OptimizerSpec] = None) -> None:
        super().__init__(options, total_steps, optimizer)
        self.done_at: int | None = None
        self.c_ema: torch.Tensor | None = None
        self.factor = 1 - momentum_of(optimizer) if options.momentum_correction else 1.0

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        if self.done_at is not None:
            return scheduled
        c = source_c_hat(self.options, ctx)
        if self.options.ema > 0:
            self.c_ema = c if self.c_ema is None else self.options.ema * self.c_ema + (1 - self.options.ema) * c
            c = self.c_ema
        eta_crit = self.factor * elr.critical_lr(c).item()
        if eta_crit >= scheduled:
            self.done_at = step
            return scheduled
        return eta_crit

    def in_warmup(self, step: int) -> bool:
        return self.done_at is None or step < self.done_at

    def state_dict(self) -> dict[str, Any]:
        return {"done_at": self.done_at, "c_ema": self.c_ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done_at, self.c_ema = state["done_at"], state["c_ema"]


class PerLayerFactors(Warmup):
    """A warm-up that sets per-layer rates through factors on the scale-invariant tensors' gradients."""

    needs_stats = True

    @classmethod
    def problems(cls, name: str, options: dict[str, Any], study: StudySpec) -> list[str]:
        return super().problems(name, options, study) + [
            f"warm-up '{name}' does not work with optimizer '{o.name}': it normalizes every coordinate, which "
            "undoes per-layer gradient factors" for o in study.grid.optimizer if create_optimizer(o).per_coordinate]


@WARMUPS.register("constrained", options=WarmupOptions)
class ConstrainedElr(PerLayerFactors):
    """Uniform ELR across layers (docs/definitions.md, section 7): eta_l = E*/c_hat_l with E* the geometric
    mean over layers of eta_schedule * c_hat_l. Applied as per-layer gradient factors
    geomean(c_hat)/c_hat_l with the scheduled rate (LARS-style: before momentum, not on weight
    decay); other parameters keep the scheduled rate. SGD and SGD with momentum only: Adam's
    per-coordinate normalization would undo a gradient factor."""

    def layer_scales(self, ctx: StepContext) -> torch.Tensor:
        c = ctx.measure.c_hat
        live = elr.live(c)  # a dead layer (zero gradient) keeps factor 1: there is nothing to scale
        logs = torch.log(torch.where(live, c, 1.0))
        geo = torch.exp((logs * live).sum() / live.sum().clamp_min(1))
        return torch.where(live, geo / torch.where(live, c, 1.0), 1.0)

    def in_warmup(self, step: int) -> bool:
        return True  # it controls every step


@WARMUPS.register("layer_cap", options=WarmupOptions)
class LayerCap(PerLayerFactors):
    """Per-layer overshoot-free cap (docs/definitions.md, section 10): each scale-invariant layer's
    gradient is scaled by min(1, 1/(eta_t c_hat_l)), so that no layer's ELR exceeds 1 while every
    layer below that bound keeps the scheduled rate (`cap` lowers the whole network's rate to the
    fastest layer's bound). No hyper-parameter, no stop rule; a step counts as warm-up when a factor
    binds. The factors stay on the device; whether one binds is read to the host once per step (for
    the count of warm-up steps), as `cap` reads its bound."""

    def __init__(self, options: WarmupOptions, total_steps: int, optimizer: Optional[OptimizerSpec] = None) -> None:
        super().__init__(options, total_steps, optimizer)
        self.eta = 0.0  # this step's rate, set by lr() just before layer_scales()
        self.binds: torch.Tensor | None = None

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        self.eta = scheduled
        return scheduled

    def layer_scales(self, ctx: StepContext) -> torch.Tensor:
        e = self.eta * ctx.measure.c_hat
        self.binds = (e > 1).any()
        return torch.where(e > 1, 1.0 / e, 1.0)

    def in_warmup(self, step: int) -> bool:
        return bool(self.binds) if self.binds is not None else False


class PerStepBound(Warmup):
    """A bound on the rate from this step's c_hat, every step, with no stop rule and no
    hyper-parameter: eta_t = min(eta_schedule(t), bound(c_hat_t)). Reads one number to the host per
    step (on a CPU nothing; on a GPU a sync per step). A step counts as warm-up when the bound binds."""

    needs_stats = True
    bound: ClassVar[Callable[[torch.Tensor], torch.Tensor]]

    def __init__(self, options: SourceOptions, total_steps: int, optimizer: Optional[OptimizerSpec] = None) -> None:
        super().__init__(options, total_steps, optimizer)
        self.bound_at: Optional[int] = None  # the last step at which the bound was below the schedule

    def lr(self, step: int, scheduled: float, ctx: StepContext | None = None) -> float:
        limit = type(self).bound(source_c_hat(self.options, ctx)).item()
        if limit < scheduled:
            self.bound_at = step
            return limit
        return scheduled

    def in_warmup(self, step: int) -> bool:
        return self.bound_at == step

    def state_dict(self) -> dict[str, Any]:
        return {"bound_at": self.bound_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bound_at = state["bound_at"]


@WARMUPS.register("cap", options=SourceOptions)
class CapWarmup(PerStepBound):
    """Overshoot-free cap (docs/definitions.md, section 10): eta_t = min(eta_schedule(t), 1/c_hat_max,t)
    every step. No layer's ELR exceeds 1, so no layer turns by more than 45 degrees in a step; the
    bound 1 is where a step is as long as the weight itself, not a tuned value."""

    bound = staticmethod(elr.overshoot_free_lr)


@WARMUPS.register("rotation", options=SourceOptions)
class RotationWarmup(PerStepBound):
    """Rotation-aware critical rule (docs/definitions.md, section 10): eta_t = min(eta_schedule(t),
    eta~_t) every step, eta~ = (c_hat_max^2 c_hat_min)^(-1/3), the one-step spread minimizer when an
    overshooting layer's base gradient falls like cos(theta). No stop rule."""

    bound = staticmethod(elr.rotation_lr)

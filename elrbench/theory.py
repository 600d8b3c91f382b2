"""The weight-dynamics model of normalized networks (docs/definitions.md, sections 3-5), vectorized
over layers.

Plain SGD on a scale-invariant tensor moves orthogonally to it, so ||W_{t+1}||^2 = ||W_t||^2 (1 + E_t^2)
exactly; with constant base gradients c_l = ||g_l|| ||W_l|| this gives the discrete map below. For
momentum, weight decay and Adam there is no closed form: the random-walk simulator applies the
optimizer's real update rule (elrbench/optimizers.py) to random gradients of the right norm,
orthogonal to the weights, and asks the real warm-up controllers (elrbench/warmup.py) for each
step's learning rate. The ELR quantities themselves (spread, eta_crit) come from elrbench/elr.py.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from elrbench import elr
from elrbench.defaults import DEFAULT_OPTIMIZER
from elrbench.diagnostics import Measure
from elrbench.optimizers import create_optimizer
from elrbench.warmup import StepContext, Warmup

if TYPE_CHECKING:
    from elrbench.spec import OptimizerSpec


def discrete_map(e: torch.Tensor, lr_ratio: float = 1.0) -> torch.Tensor:
    """E_{t+1} = (eta_{t+1}/eta_t) E_t / (1 + E_t^2): one plain SGD step under constant base gradients."""
    return lr_ratio * e / (1 + e * e)


def rotation_map(e: torch.Tensor, lr_ratio: float = 1.0) -> torch.Tensor:
    """E_{t+1} = (eta_{t+1}/eta_t) E_t / (1 + E_t^2)^(3/2): one plain SGD step when the base gradient
    falls like cos(theta) as the step turns the tensor by theta = arctan(E_t) (the rotation-aware
    model, docs/definitions.md section 10). Equals discrete_map to first order for E << 1."""
    return lr_ratio * e / (1 + e * e) ** 1.5


def closed_form(elr0: torch.Tensor, t: torch.Tensor | float, first_step: bool = False) -> torch.Tensor:
    """E(t) = 1/sqrt(E(0)^-2 + 2t) for a constant learning rate (continuous form of the map).

    first_step: the exact map in u = E^-2 is u_{t+1} = u_t + 2 + 1/u_t, whose sum is about
    u_0 + 1/u_0 + 2t; the continuous form misses the 1/u_0 = E(0)^2 of the first step, which
    dominates for an overshooting layer (E(0) > 1). Only for t >= 1."""
    u0 = elr0.double() ** -2
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.rsqrt(u0 + (1 / u0 if first_step else 0) + 2 * t)


def steps_to_spread(elr0: torch.Tensor, target: float) -> int:
    """Closed form: the first step t at which log10(max E / min E) falls below target."""
    lo, hi = 0, 1
    while elr.spread(closed_form(elr0, hi)) >= target:
        hi *= 2
        if hi > 2**62:
            raise ValueError("the spread never falls below the target")
    while lo < hi:  # the spread shrinks monotonically for a constant learning rate
        mid = (lo + hi) // 2
        if elr.spread(closed_form(elr0, mid)) < target:
            hi = mid
        else:
            lo = mid + 1
    return lo


ONE_STEP_MODELS = {"constant": discrete_map, "rotation": rotation_map}  # base gradient: constant, or cos(theta)


def one_step_spread(c_hat: torch.Tensor, lrs: torch.Tensor, model: str = "constant") -> torch.Tensor:
    """log10 spread after one plain SGD step at each learning rate in lrs (vectorized over both),
    under the constant-base-gradient model or the rotation-aware one."""
    e = lrs.double()[:, None] * c_hat.double()[None, :]
    return elr.spread(ONE_STEP_MODELS[model](e))


# ---------------------------------------------------------------- random-walk simulator (section 5)
@dataclass(frozen=True)
class Trajectory:
    w_norm: torch.Tensor  # (steps + 1, layers): ||W_l|| before each step and after the last
    elr: torch.Tensor  # (steps, layers): E = lr_l,t c_l / ||W_l||^2 at each step
    update_ratio: torch.Tensor  # (steps, layers): ||W_{t+1} - W_t|| / ||W_t||
    lr: torch.Tensor  # (steps,): the learning rate applied (before any per-layer factor)

    @property
    def spread(self) -> torch.Tensor:
        return elr.spread(self.elr)


def simulate(
    c: torch.Tensor,
    w0: torch.Tensor,
    lr: float,
    steps: int,
    *,
    optimizer: Optional[OptimizerSpec] = None,
    warmup: Optional[Warmup] = None,
    schedule: Optional[Callable[[int], float]] = None,
    batch_acc: Optional[Callable[[int], float]] = None,
    dim: int | Sequence[int] | torch.Tensor = 32,
    seed: int = 0,
) -> Trajectory:
    """Algorithm 'random walk': each step, per layer, a Gaussian direction orthogonal to W_l scaled to
    ||g_l|| = c_l/||W_l||, then the optimizer's update. All layers are rows of one array (every rule
    is elementwise).

    The learning rate of step t is schedule(t) (default: the constant lr), passed through the warm-up
    controller if one is given, exactly as the training loop does: it sees this step's per-layer norms,
    the update direction the optimizer would take, and batch_acc(t) (the model has no data: a warm-up
    that reads the training accuracy needs it from the caller). Per-layer factors from the warm-up
    (constrained ELR) scale the layers' gradients, as in the loop.

    dim is each layer's element count (one number for all layers, or one per layer), as in the paper's
    Algorithm 1; give a real network's counts. Plain SGD does not depend on it (the update is the
    gradient, whose norm is set). Adam does, directly: it normalizes every coordinate, so its relative
    update is about lr sqrt(dim_l) / ||W_l|| (exactly that on the first step), and a wrong dim puts a
    false factor sqrt(dim_l / dim) between layers. Momentum does through how correlated successive
    random directions are (about 1/sqrt(dim)). Layers of different sizes are rows padded with zeros,
    which stay zero under every rule.
    """
    from elrbench.spec import OptimizerSpec

    if warmup is not None and warmup.needs_batch_acc and batch_acc is None:
        raise ValueError(f"{type(warmup).__name__} reads the training accuracy, which the random-walk model "
                         "does not have: pass batch_acc")
    rng = np.random.default_rng(seed)
    c = np.asarray(c, dtype=np.float64)
    n = len(c)
    dims = np.broadcast_to(np.asarray(dim, dtype=np.int64), (n,))
    if (dims < 2).any():
        raise ValueError("every layer needs at least 2 elements (a direction orthogonal to W)")
    width = int(dims.max())
    mask = np.arange(width)[None, :] < dims[:, None]  # (layers, width): which entries exist
    w = rng.standard_normal((n, width)) * mask
    w *= (np.asarray(w0, dtype=np.float64) / np.linalg.norm(w, axis=1))[:, None]
    rule = create_optimizer(optimizer or OptimizerSpec(name=DEFAULT_OPTIMIZER)).rule()
    norms = np.empty((steps + 1, n))
    upd = np.empty((steps, n))
    lrs = np.empty(steps)
    layer_lr = np.ones((steps, n))  # per-layer factors on the rate (constrained ELR), 1 otherwise
    norms[0] = np.linalg.norm(w, axis=1)
    chunk = int(np.clip(2**22 // (n * width), 1, 512))  # steps of noise drawn at once (<= 32 MB)
    for t in range(steps):
        if t % chunk == 0:
            noise = rng.standard_normal((min(chunk, steps - t), n, width)) * mask
        wn = norms[t]
        z = noise[t % chunk]
        z -= (np.einsum("ij,ij->i", z, w) / (wn * wn))[:, None] * w
        z *= (c / wn / np.linalg.norm(z, axis=1))[:, None]
        eta = schedule(t) if schedule is not None else lr
        if warmup is not None:
            ctx = _step_context(t, w, z, wn, c, rule, batch_acc)
            eta = warmup.lr(t, eta, ctx)
            scales = warmup.layer_scales(ctx)
            if scales is not None:
                layer_lr[t] = scales.numpy()
                z *= layer_lr[t][:, None]
        before = w.copy()
        rule.step(w, z, eta)
        norms[t + 1] = np.linalg.norm(w, axis=1)
        upd[t] = np.linalg.norm(w - before, axis=1) / wn
        lrs[t] = eta
    elrs = lrs[:, None] * layer_lr * c[None, :] / norms[:-1] ** 2
    as_t = torch.from_numpy
    return Trajectory(as_t(norms), as_t(elrs), as_t(upd), as_t(lrs))


def _step_context(t: int, w: np.ndarray, g: np.ndarray, wn: np.ndarray, c: np.ndarray, rule,
                  batch_acc: Optional[Callable[[int], float]]) -> StepContext:
    """What a warm-up sees at step t of a simulation, as the training loop gives it (lazily)."""
    return StepContext(
        measure=Measure(torch.from_numpy(wn), torch.from_numpy(c / wn)),
        batch_acc=(lambda: batch_acc(t)) if batch_acc is not None else None,
        update_c_hat=lambda: torch.from_numpy(np.linalg.norm(rule.direction(w, g), axis=1) / wn))


def wd_equilibrium(lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Equilibrium angular update sqrt(2 eta lambda / (1 + beta)) (Wan et al. 2021; Kosson et al. 2024)."""
    return math.sqrt(2 * lr * weight_decay / (1 + momentum))

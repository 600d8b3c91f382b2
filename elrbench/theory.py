"""The weight-dynamics model of normalized networks (science.md sections 3-5), vectorized over layers.

Plain SGD on a scale-invariant tensor moves orthogonally to it, so ||W_{t+1}||^2 = ||W_t||^2 (1 + E_t^2)
exactly; with constant base gradients c_l = ||g_l|| ||W_l|| this gives the discrete map below. For
momentum, weight decay and Adam there is no closed form: the random-walk simulator applies the real
torch.optim update to random gradients of the right norm, orthogonal to the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch

LN10 = math.log(10)


def discrete_map(elr: torch.Tensor, lr_ratio: float = 1.0) -> torch.Tensor:
    """E_{t+1} = (eta_{t+1}/eta_t) E_t / (1 + E_t^2): one plain SGD step under constant base gradients."""
    return lr_ratio * elr / (1 + elr * elr)


def closed_form(elr0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """E(t) = 1/sqrt(E(0)^-2 + 2t) for a constant learning rate (continuous form of the map)."""
    return torch.rsqrt(elr0.double() ** -2 + 2 * torch.as_tensor(t, dtype=torch.float64))


def log10_spread(elr: torch.Tensor, dim: int = -1) -> torch.Tensor:
    lg = torch.log10(elr.double().clamp_min(1e-300))
    return lg.amax(dim) - lg.amin(dim)


def steps_to_spread(elr0: torch.Tensor, target: float) -> int:
    """Closed form: the first step t at which log10(max E / min E) falls below target."""
    lo, hi = 0, 1
    while log10_spread(closed_form(elr0, hi)) >= target:
        hi *= 2
        if hi > 2**62:
            raise ValueError("the spread never falls below the target")
    while lo < hi:  # the spread shrinks monotonically for a constant learning rate
        mid = (lo + hi) // 2
        if log10_spread(closed_form(elr0, mid)) < target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def critical_lr(c_hat: torch.Tensor) -> float:
    """eta_crit = 1/sqrt(c_hat_max c_hat_min): centres log E on 0, so E_max E_min = 1 (section 4)."""
    c = c_hat.double().clamp_min(1e-300)
    return float(torch.rsqrt(c.max() * c.min()))


def one_step_spread(c_hat: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
    """log10 spread after one plain SGD step at each learning rate in lrs (vectorized over both)."""
    elr = lrs.double()[:, None] * c_hat.double()[None, :]
    return log10_spread(discrete_map(elr))


# ---------------------------------------------------------------- random-walk simulator (section 5)
Optimizer = Literal["sgd", "sgdm", "adam", "adamw"]


@dataclass(frozen=True)
class Trajectory:
    w_norm: torch.Tensor  # (steps + 1, layers): ||W_l|| before each step and after the last
    elr: torch.Tensor  # (steps, layers): E = lr_t c_l / ||W_l||^2 at each step
    update_ratio: torch.Tensor  # (steps, layers): ||W_{t+1} - W_t|| / ||W_t||
    lr: torch.Tensor  # (steps,): the learning rate applied

    @property
    def spread(self) -> torch.Tensor:
        return log10_spread(self.elr)


class _Rule:
    """torch.optim's update rules (SGD with momentum/nesterov/weight decay, Adam, AdamW) written out
    for one (layers, dim) float64 array: the same formulas in the same order as torch.optim's
    single-tensor path, in NumPy, whose per-call overhead on arrays this small is a fraction of
    torch's. tests/test_theory.py checks every rule against torch.optim itself."""

    def __init__(self, optimizer: str, momentum: float, nesterov: bool, weight_decay: float,
                 betas: tuple[float, float], eps: float) -> None:
        self.kind, self.mu, self.nesterov, self.wd = optimizer, momentum, nesterov, weight_decay
        self.b1, self.b2 = betas
        self.eps = eps
        self.buf = self.m = self.v = None
        self.t = 0

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        if self.kind in ("sgd", "sgdm"):
            d = g + self.wd * w if self.wd else g
            if self.kind == "sgdm" and self.mu:
                if self.buf is None:
                    self.buf = d.copy()
                else:
                    self.buf *= self.mu
                    self.buf += d
                d = d + self.mu * self.buf if self.nesterov else self.buf
            w -= lr * d
            return
        self.t += 1
        if self.kind == "adamw":
            w *= 1 - lr * self.wd
        elif self.wd:
            g = g + self.wd * w
        if self.m is None:
            self.m, self.v = np.zeros_like(w), np.zeros_like(w)
        self.m += (1 - self.b1) * (g - self.m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        self.v *= self.b2
        self.v += (1 - self.b2) * g * g
        bc1, bc2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        denom = np.sqrt(self.v) / math.sqrt(bc2) + self.eps
        w -= (lr / bc1) * self.m / denom


def simulate(
    c: torch.Tensor,
    w0: torch.Tensor,
    lr: float | Callable[[int, torch.Tensor], float],
    steps: int,
    *,
    optimizer: Optimizer = "sgd",
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    dim: int = 32,
    seed: int = 0,
) -> Trajectory:
    """Algorithm 'random walk': each step, per layer, a Gaussian direction orthogonal to W_l scaled to
    ||g_l|| = c_l/||W_l||, then the optimizer's update. All layers are rows of one array (every rule
    is elementwise). lr may be a function (step, c_hat per layer) -> lr: that is how a warm-up
    controller is simulated. dim is the reduced weight dimension: plain SGD does not depend on it;
    momentum and Adam do, through how correlated successive random directions are.
    """
    rng = np.random.default_rng(seed)
    c = np.asarray(c, dtype=np.float64)
    n = len(c)
    w = rng.standard_normal((n, dim))
    w *= (np.asarray(w0, dtype=np.float64) / np.linalg.norm(w, axis=1))[:, None]
    rule = _Rule(optimizer, momentum, nesterov, weight_decay, betas, eps)
    norms = np.empty((steps + 1, n))
    upd = np.empty((steps, n))
    lrs = np.empty(steps)
    norms[0] = np.linalg.norm(w, axis=1)
    chunk = 512
    for t in range(steps):
        if t % chunk == 0:
            noise = rng.standard_normal((min(chunk, steps - t), n, dim))
        wn = norms[t]
        z = noise[t % chunk]
        z -= (np.einsum("ij,ij->i", z, w) / (wn * wn))[:, None] * w
        z *= (c / wn / np.linalg.norm(z, axis=1))[:, None]
        eta = lr(t, torch.from_numpy(c / (wn * wn))) if callable(lr) else lr
        before = w.copy()
        rule.step(w, z, eta)
        norms[t + 1] = np.linalg.norm(w, axis=1)
        upd[t] = np.linalg.norm(w - before, axis=1) / wn
        lrs[t] = eta
    elrs = lrs[:, None] * c[None, :] / norms[:-1] ** 2
    as_t = torch.from_numpy
    return Trajectory(as_t(norms), as_t(elrs), as_t(upd), as_t(lrs))


def critical_controller(target: float | Callable[[int], float]) -> Callable[[int, torch.Tensor], float]:
    """The critical warm-up (section 6) as a simulator learning-rate function."""
    state = {"done": False}

    def lr(t: int, c_hat: torch.Tensor) -> float:
        sched = target(t) if callable(target) else target
        if state["done"]:
            return sched
        eta = critical_lr(c_hat)
        if eta >= sched:
            state["done"] = True
            return sched
        return eta

    return lr


def wd_equilibrium(lr: float, weight_decay: float, momentum: float = 0.0) -> float:
    """Equilibrium angular update sqrt(2 eta lambda / (1 + beta)) (Wan et al. 2021; Kosson et al. 2024)."""
    return math.sqrt(2 * lr * weight_decay / (1 + momentum))

"""The optimizers a study can use, one registry entry each: which spec fields it takes, how it is
built, the direction its next step will take (read from its state before it steps, for warm-ups
that measure the update instead of the gradient), and its update rule for the random-walk simulator.

Adding an optimizer is one decorated class here: the spec, the training loop, the warm-ups'
compatibility checks, the simulator and `elrbench theory simulate` all look it up by name.
"""
from __future__ import annotations

import math
from typing import ClassVar, Optional, Protocol

import numpy as np
import torch

from elrbench.defaults import DEFAULT_OPTIMIZER
from elrbench.workloads.registry import Registry


class OptimizerSpec(Protocol):
    """What an optimizer reads of its spec: the fields of elrbench.spec.OptimizerSpec (spec.py imports
    this registry to validate names, so this module names the fields, not spec's class)."""

    name: str
    momentum: Optional[float]
    nesterov: bool
    betas: tuple[float, float]
    eps: float
    weight_decay: float


class Rule:
    """One optimizer's update on a (layers, dim) float64 array, in NumPy (whose per-call overhead on
    arrays this small is a fraction of torch's): the same formulas in the same order as torch.optim's
    single-tensor path. tests/test_optimizers.py checks every rule against torch.optim itself."""

    def direction(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The u of the next step, W <- W - lr u, without taking it."""
        raise NotImplementedError

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        """Take the step: update w in place and advance the optimizer's state."""
        raise NotImplementedError


class SgdRule(Rule):
    def __init__(self, momentum: float, nesterov: bool, weight_decay: float, tangent: bool = False) -> None:
        self.mu, self.nesterov, self.wd, self.tangent = momentum, nesterov, weight_decay, tangent
        self.buf: Optional[np.ndarray] = None

    def _next(self, w: np.ndarray, g: np.ndarray) -> tuple[Optional[np.ndarray], np.ndarray]:
        d = g + self.wd * w if self.wd else g
        if not self.mu:
            return None, d
        old = self.buf
        if old is not None and self.tangent:  # every row of the simulator is a scale-invariant tensor
            old = old - (np.einsum("ij,ij->i", old, w) / np.einsum("ij,ij->i", w, w))[:, None] * w
        buf = d.copy() if old is None else old * self.mu + d
        return buf, d + self.mu * buf if self.nesterov else buf

    def direction(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        return self._next(w, g)[1]

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.buf, u = self._next(w, g)
        w -= lr * u


class AdamRule(Rule):
    def __init__(self, betas: tuple[float, float], eps: float, weight_decay: float, decoupled: bool) -> None:
        (self.b1, self.b2), self.eps, self.wd, self.decoupled = betas, eps, weight_decay, decoupled
        self.m: Optional[np.ndarray] = None
        self.v: Optional[np.ndarray] = None
        self.t = 0

    def _next(self, w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        if self.wd and not self.decoupled:
            g = g + self.wd * w
        # torch: exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        m = (1 - self.b1) * g if self.m is None else self.m + (1 - self.b1) * (g - self.m)
        v = (1 - self.b2) * g * g if self.v is None else self.v * self.b2 + (1 - self.b2) * g * g
        t = self.t + 1
        denom = np.sqrt(v) / math.sqrt(1 - self.b2**t) + self.eps
        return m, v, 1 - self.b1**t, denom

    def direction(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        m, _, bc1, denom = self._next(w, g)
        return (1 / bc1) * m / denom  # AdamW's decoupled decay shrinks W apart from u

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.m, self.v, bc1, denom = self._next(w, g)
        self.t += 1
        if self.decoupled:
            w *= 1 - lr * self.wd
        w -= (lr / bc1) * self.m / denom


class Optimizer:
    """A registered optimizer, bound to one OptimizerSpec."""

    takes_momentum: ClassVar[bool] = False  # momentum and nesterov
    default_momentum: ClassVar[Optional[float]] = None
    takes_betas: ClassVar[bool] = False
    # Adam-style: every coordinate's step is normalized by its own history, so a per-layer factor on
    # the gradient cancels out (warm-ups that set per-layer rates through gradients do not fit it).
    per_coordinate: ClassVar[bool] = False
    # its momentum buffer is kept in the scale-invariant tensors' tangent spaces (before_step)
    tangent: ClassVar[bool] = False

    def __init__(self, spec: OptimizerSpec) -> None:
        self.spec = spec

    @classmethod
    def problems(cls, spec: OptimizerSpec, given: set[str] | None = None) -> list[tuple[str, str]]:
        """What in the spec this optimizer cannot take, as (field, message); given: the fields the
        spec sets to other than their defaults."""
        out = []
        if cls.takes_betas and spec.momentum is not None:
            out.append(("momentum", f"{spec.name} takes betas, not momentum"))
        elif not cls.takes_momentum and spec.momentum:
            out.append(("momentum", f"{spec.name} has no momentum; use name: sgdm"))
        if spec.nesterov and not cls.takes_momentum:
            out.append(("nesterov", "nesterov needs name: sgdm"))
        if not cls.takes_betas:
            out += [(f, f"{spec.name} has no {f} (adam and adamw take it)")
                    for f in ("betas", "eps") if f in (given or ())]
        return out

    @property
    def beta2(self) -> Optional[float]:
        """The second-moment decay, for warm-ups derived from it (None: the optimizer has none)."""
        return self.spec.betas[1] if self.takes_betas else None

    def build(self, params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    def direction(self, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
        """The u of the step opt is about to take, W <- W - lr u, from the gradients and its state."""
        raise NotImplementedError

    def before_step(self, opt: torch.optim.Optimizer, scale_invariant: list[torch.nn.Parameter]) -> None:
        """Called by the training loop just before opt.step(), with the network's scale-invariant
        tensors (elrbench.diagnostics.discover); nothing by default."""

    def rule(self) -> Rule:
        raise NotImplementedError


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer")


def create_optimizer(spec: OptimizerSpec) -> Optimizer:
    return OPTIMIZERS.get(spec.name).fn(spec)


def _grads(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


@OPTIMIZERS.register(DEFAULT_OPTIMIZER)
class Sgd(Optimizer):
    """Plain SGD (weight decay as L2 on the gradient, as torch.optim.SGD)."""

    def build(self, params, lr):
        s = self.spec
        return torch.optim.SGD(params, lr=lr, momentum=s.momentum or 0.0, nesterov=s.nesterov,
                               weight_decay=s.weight_decay)

    @torch.no_grad()
    def direction(self, opt, params):
        # torch.optim.SGD: d = g + wd W; buf = mu buf + d (the first step: buf = d); u = buf, or
        # d + mu buf with nesterov
        mu, wd = self.spec.momentum or 0.0, self.spec.weight_decay
        d = torch._foreach_add(_grads(params), params, alpha=wd) if wd else _grads(params)
        if not mu:
            return d
        bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
        if self.tangent and all(b is not None for b in bufs):
            bufs = tangent_projection(bufs, params)
        u = [di if b is None else b * mu + di for b, di in zip(bufs, d)]
        return [di + mu * ui for di, ui in zip(d, u)] if self.spec.nesterov else u

    def rule(self) -> Rule:
        return SgdRule(self.spec.momentum or 0.0, self.spec.nesterov, self.spec.weight_decay, self.tangent)


@OPTIMIZERS.register("sgdm")
class SgdMomentum(Sgd):
    """SGD with heavy-ball (or nesterov) momentum, 0.9 unless the spec says otherwise."""

    takes_momentum = True
    default_momentum = 0.9


@OPTIMIZERS.register("sgdp")
class SgdTangentMomentum(SgdMomentum):
    """SGD with momentum whose buffer is projected onto each scale-invariant tensor's tangent space
    before every step, b <- b - (<b, W>/||W||^2) W, as SGDP does (Heo et al., ICLR 2021) for the
    tensors it detects as scale-invariant; here they are the tensors that feed a normalization
    (elrbench.diagnostics.discover). The step then has no radial part from the buffer, so a layer
    that overshot is not pushed further outward by its stale momentum (docs/definitions.md,
    section 10). Other parameters get plain heavy-ball momentum; a network without normalization
    trains as with sgdm."""

    tangent = True

    @torch.no_grad()
    def before_step(self, opt, scale_invariant):
        bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in scale_invariant]
        if scale_invariant and all(b is not None for b in bufs):  # after the first step
            projected = tangent_projection(bufs, scale_invariant)
            torch._foreach_copy_(bufs, projected)


def tangent_projection(vectors: list[torch.Tensor], params: list[torch.Tensor]) -> list[torch.Tensor]:
    """v_l - (<v_l, W_l>/||W_l||^2) W_l for every tensor, in fused norm passes (no per-tensor loop):
    <v, W> = (||v + W||^2 - ||v - W||^2) / 4."""
    plus = torch.stack(torch._foreach_norm(torch._foreach_add(vectors, params)))
    minus = torch.stack(torch._foreach_norm(torch._foreach_sub(vectors, params)))
    w2 = torch.stack(torch._foreach_norm(params)) ** 2
    coef = (plus * plus - minus * minus) / 4 / w2.clamp_min(1e-30)
    return torch._foreach_sub(vectors, torch._foreach_mul(list(params), list(coef.unbind())))


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba 2015); weight decay as L2 on the gradient, as torch.optim.Adam."""

    takes_betas = True
    per_coordinate = True
    decoupled: ClassVar[bool] = False

    def build(self, params, lr):
        s = self.spec
        cls = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        return cls(params, lr=lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay)

    @torch.no_grad()
    def direction(self, opt, params):
        # u = m_hat / (sqrt(v_hat) + eps) after this step's moment updates; AdamW's decoupled decay
        # shrinks W apart from u and is left out
        (b1, b2), eps, wd = self.spec.betas, self.spec.eps, self.spec.weight_decay
        u = []
        for p, g in zip(params, _grads(params)):
            if wd and not self.decoupled:
                g = g + wd * p
            st = opt.state.get(p, {})
            t = int(st["step"]) + 1 if "step" in st else 1
            m = st["exp_avg"] * b1 + (1 - b1) * g if "exp_avg" in st else (1 - b1) * g
            v = st["exp_avg_sq"] * b2 + (1 - b2) * g * g if "exp_avg_sq" in st else (1 - b2) * g * g
            u.append((m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))
        return u

    def rule(self) -> Rule:
        return AdamRule(self.spec.betas, self.spec.eps, self.spec.weight_decay, self.decoupled)


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): decoupled weight decay W <- W (1 - lr wd) before the step."""

    decoupled = True

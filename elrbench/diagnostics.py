"""Per-layer effective-learning-rate diagnostics of the scale-invariant tensors (science.md 1-2).

Discovery reads the module graph (torch.fx): a Conv/Linear weight whose output feeds only a
BatchNorm/LayerNorm/GroupNorm. Statistics use one fused norm pass over all weights and one over all
gradients (torch._foreach_norm) and stay on the device; the run-level sums are device scalars, and
the host reads them only at the log period. Under DDP the gradients are already averaged after
backward, so every rank computes the same numbers.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from elrbench.errors import ElrbenchError, NoScaleInvariantTensors

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
TINY = 1e-30  # guards divisions; never used to give a dead layer an ELR
# A layer whose gradient is exactly zero (all its ReLUs dead) has ELR 0 and no place on a log scale:
# spreads and eta_crit are taken over the live layers, and the dead ones are counted separately.


def discover(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every weight whose output goes straight (and only) into a normalization.

    A bias in between is harmless only for BatchNorm (its mean subtraction removes a per-channel
    bias); before LayerNorm/GroupNorm a biased layer is not scale-invariant and is left out.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - any tracing failure means: cannot discover
        raise ElrbenchError(f"cannot trace {type(model).__name__} to find its scale-invariant tensors: {e}") from None
    modules = dict(model.named_modules())
    found, seen = [], set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], WEIGHT_TYPES):
            continue
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        layer, norm = modules[node.target], modules[users[0].target]
        if not isinstance(norm, NORM_TYPES):
            continue
        if layer.bias is not None and not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            continue
        if node.target not in seen:
            seen.add(node.target)
            found.append((f"{node.target}.weight", layer.weight))
    return found


def require(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    found = discover(model)
    if not found:
        raise NoScaleInvariantTensors(
            f"{type(model).__name__} has no weight followed directly by a normalization layer, so it has no "
            "effective learning rates to measure (is norm: none?)")
    return found


@dataclass(frozen=True)
class InvarianceCheck:
    name: str
    loss_change: float  # |L(3W) - L(W)| / |L(W)|
    cosine: float  # <g, W> / (|g| |W|)
    ok: bool


def self_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, factor: float = 3.0,
               tol: float = 1e-4) -> list[InvarianceCheck]:
    """Numerically check every discovered tensor: scaling it leaves the loss unchanged, and the
    gradient is orthogonal to it. Runs on a float64 copy in training mode (batch statistics)."""
    m = copy.deepcopy(model).double().train()
    x = x.double()
    names = [n for n, _ in require(m)]
    params = dict(m.named_parameters())
    out = []
    for name in names:
        w = params[name]
        m.zero_grad()
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        cos = (torch.sum(w.grad * w) / (w.grad.norm() * w.norm()).clamp_min(TINY)).item()
        with torch.no_grad():
            w.mul_(factor)
            scaled = F.cross_entropy(m(x), y)
            w.div_(factor)
        change = abs(scaled.item() - loss.item()) / max(abs(loss.item()), TINY)
        out.append(InvarianceCheck(name, change, cos, change < tol and abs(cos) < tol))
    return out


def log_range(x: torch.Tensor) -> torch.Tensor:
    """log10(max/min) over the positive entries (0 if fewer than two), on the device."""
    live = x > 0
    lg = torch.log10(torch.where(live, x, 1.0))
    hi = torch.where(live, lg, -torch.inf).max()
    lo = torch.where(live, lg, torch.inf).min()
    return torch.where(live.sum() >= 2, hi - lo, 0.0)


def critical_lr_live(c_hat: torch.Tensor) -> torch.Tensor:
    """eta_crit = 1/sqrt(c_max c_min) over the live layers (science.md section 4), a device scalar."""
    live = c_hat > 0
    hi = torch.where(live, c_hat, 0.0).max()
    lo = torch.where(live, c_hat, torch.inf).min()
    return torch.rsqrt(hi * lo)


def spread_of(elr: torch.Tensor) -> torch.Tensor:
    """log10(max/min) ELR over the live layers (on the device)."""
    return log_range(elr)


def grad_explosion_slope(g_norms: torch.Tensor) -> float:
    """Least-squares slope of log10 ||g_l|| against layer position (input side first), per layer.

    Negative: gradients grow towards the input, as in BN networks without skips (Yang et al. 2019).
    """
    y = torch.log10(g_norms.double().clamp_min(TINY))
    x = torch.arange(len(y), dtype=torch.float64, device=y.device)
    if len(y) < 2:
        return 0.0
    xc = x - x.mean()
    return (torch.sum(xc * (y - y.mean())) / torch.sum(xc * xc)).item()


@dataclass
class Measure:
    """One step's norms, on the device."""

    w: torch.Tensor  # ||W_l||
    g: torch.Tensor  # ||g_l||

    @property
    def c_hat(self) -> torch.Tensor:  # ELR per unit learning rate
        return self.g / self.w.clamp_min(TINY)

    @property
    def base(self) -> torch.Tensor:  # gradient norm at unit weight norm
        return self.g * self.w

    def critical_lr(self) -> torch.Tensor:
        """eta_crit = 1 / sqrt(c_hat_max c_hat_min) over the live layers, a device scalar."""
        return critical_lr_live(self.c_hat)


class LayerDiagnostics:
    """Tracks the scale-invariant tensors of one model through training."""

    def __init__(self, model: nn.Module, early_steps: int = 50) -> None:
        found = require(model)
        self.names = [n for n, _ in found]
        self.params = [p for _, p in found]
        dev = self.params[0].device
        self.early_steps = early_steps
        z = lambda: torch.zeros((), device=dev, dtype=torch.float64)  # noqa: E731
        # run-level sums, device scalars
        self.totals = {"spread_sum": z(), "spread_max": z(), "early_sum": z(), "overshoot_steps": z(), "steps": z(),
                       "early_steps": z(), "dead_max": z()}
        self.explosion_slope: float | None = None
        self._before: list[torch.Tensor] | None = None

    @torch.no_grad()
    def measure(self) -> Measure:
        w = torch.stack(torch._foreach_norm(self.params))
        g = torch.stack(torch._foreach_norm([p.grad if p.grad is not None else torch.zeros_like(p)
                                             for p in self.params]))
        return Measure(w, g)

    @torch.no_grad()
    def record(self, m: Measure, lrs: torch.Tensor | float, step: int) -> torch.Tensor:
        """Fold one step into the run-level sums (device ops only); returns the per-layer ELRs."""
        elr = m.c_hat * lrs
        spread = spread_of(elr)
        t = self.totals
        t["spread_sum"] += spread
        t["spread_max"] = torch.maximum(t["spread_max"], spread)
        t["overshoot_steps"] += (elr > 1).any()
        t["dead_max"] = torch.maximum(t["dead_max"], (m.g == 0).sum())
        t["steps"] += 1
        if step < self.early_steps:
            t["early_sum"] += spread
            t["early_steps"] += 1
        if self.explosion_slope is None and step == 0:
            self.explosion_slope = grad_explosion_slope(m.g)  # once, at initialization
        return elr

    # the actual relative update ||W_{t+1} - W_t|| / ||W_t||, measured at log steps only
    @torch.no_grad()
    def snapshot(self) -> None:
        self._before = torch._foreach_mul(self.params, 1.0)

    @torch.no_grad()
    def update_ratio(self) -> torch.Tensor:
        assert self._before is not None
        delta = torch._foreach_sub(self.params, self._before)
        ratio = torch.stack(torch._foreach_norm(delta)) / torch.stack(torch._foreach_norm(self._before)).clamp_min(TINY)
        self._before = None
        return ratio

    def summary(self) -> dict[str, float | None]:
        t = {k: v.item() for k, v in self.totals.items()}
        n, k = max(t["steps"], 1), max(t["early_steps"], 1)
        return {"spread_mean": t["spread_sum"] / n, "spread_early_mean": t["early_sum"] / k,
                "spread_max": t["spread_max"], "overshoot_steps": int(t["overshoot_steps"]),
                "dead_layers_max": int(t["dead_max"]),
                "grad_explosion_slope": self.explosion_slope}

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals, "explosion_slope": self.explosion_slope}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.totals = s["totals"]
        self.explosion_slope = s["explosion_slope"]


def log_row(step: int, m: Measure, elr: torch.Tensor, lrs: torch.Tensor | float,
            update: torch.Tensor | None) -> dict[str, Any]:
    """One host copy of everything per layer at a log step (the only sync of the diagnostics).

    Derived columns (c_hat, base gradient, classic ELR) are computed on the host from the copy.
    """
    lr_vec = lrs if isinstance(lrs, torch.Tensor) else torch.full_like(m.w, float(lrs))
    cols = [m.w, m.g, elr, lr_vec] + ([update] if update is not None else [])
    host = torch.stack([c.double() for c in cols]).cpu().tolist()
    w, g, e, lr = host[:4]
    row = {"step": step, "w_norm": w, "g_norm": g, "elr": e, "lr": lr,
           "c_hat": [gi / max(wi, TINY) for wi, gi in zip(w, g)],
           "base_grad": [gi * wi for wi, gi in zip(w, g)],
           "classic_elr": [li / max(wi * wi, TINY) for wi, li in zip(w, lr)]}
    if update is not None:
        row["update_ratio"] = host[4]
    return row


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """Scalar summaries of a per-layer row, for the history (over the live layers)."""
    live = [(e, c) for e, c, g in zip(row["elr"], row["c_hat"], row["g_norm"]) if g > 0]
    out: dict[str, Any] = {"dead_layers": len(row["elr"]) - len(live),
                           "overshooting_layers": sum(e > 1 for e, _ in live)}
    if len(live) < 2:
        return out | {"elr_spread": 0.0, "elr_spread_std": 0.0}
    lg = [math.log10(e) for e, _ in live]
    mean = sum(lg) / len(lg)
    c = [ci for _, ci in live]
    return out | {"elr_spread": max(lg) - min(lg), "elr_spread_std": (sum((v - mean) ** 2 for v in lg) / len(lg)) ** 0.5,
                  "elr_min": min(e for e, _ in live), "elr_max": max(e for e, _ in live),
                  "eta_crit": 1 / math.sqrt(max(c) * min(c))}


@torch.no_grad()
def update_c_hat(opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> torch.Tensor:
    """||u_l|| / ||W_l|| for the direction u_l this step will apply (W -= lr u), read from the
    optimizer state before it steps, as torch.optim computes it: SGD with momentum u = mu*buf + g
    (+ weight decay; nesterov: g + mu*u); AdamW u = m_hat / (sqrt(v_hat) + eps) without the decay."""
    group = opt.param_groups[0]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if isinstance(opt, torch.optim.SGD):
        mu, wd = group["momentum"], group["weight_decay"]
        d = torch._foreach_add(grads, params, alpha=wd) if wd else grads
        if mu:
            bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in params]
            u = [di if b is None else b * mu + di for b, di in zip(bufs, d)]
            if group["nesterov"]:
                u = [di + mu * ui for di, ui in zip(d, u)]
        else:
            u = d
    elif isinstance(opt, torch.optim.Adam):  # AdamW subclasses Adam
        b1, b2 = group["betas"]
        u = []
        for p, g in zip(params, grads):
            st = opt.state.get(p, {})
            t = int(st["step"]) + 1 if "step" in st else 1
            m = st["exp_avg"] * b1 + (1 - b1) * g if "exp_avg" in st else (1 - b1) * g
            v = st["exp_avg_sq"] * b2 + (1 - b2) * g * g if "exp_avg_sq" in st else (1 - b2) * g * g
            u.append((m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"]))
    else:
        raise ElrbenchError(f"no update rule known for {type(opt).__name__}")
    return torch.stack(torch._foreach_norm(u)) / torch.stack(torch._foreach_norm(params)).clamp_min(TINY)

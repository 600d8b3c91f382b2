"""Per-layer effective-learning-rate diagnostics of the scale-invariant tensors (docs/definitions.md,
sections 1-2); the quantities themselves are defined once, in elrbench/elr.py.

Discovery reads the module graph (torch.fx): a Conv/Linear weight whose output feeds only a
BatchNorm/LayerNorm/GroupNorm. Statistics use one fused norm pass over all weights and one over all
gradients (torch._foreach_norm) and stay on the device; the run-level sums are device scalars, and
the host reads them only at the log period. Under DDP the gradients are already averaged after
backward, so every rank computes the same numbers.
"""
from __future__ import annotations

import copy
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from elrbench import elr
from elrbench.elr import TINY
from elrbench.errors import ElrbenchError, NoScaleInvariantTensors

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
WEIGHT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


_FOUND: dict[Hashable, list[str]] = {}  # discover's answers by architecture, for this process


def discover(model: nn.Module, key: Optional[Hashable] = None) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every weight whose output goes straight (and only) into a normalization.

    A bias in between is harmless only for BatchNorm (its mean subtraction removes a per-channel
    bias); before LayerNorm/GroupNorm a biased layer is not scale-invariant and is left out.
    key: what determines the model's architecture (the arguments it was built from); the names found
    are kept under it, and a model of the same key is not traced again (tracing is about 8 ms, as
    long as a whole 3-step trial of a small network).
    """
    if key is not None and key in _FOUND:
        params = dict(model.named_parameters())
        return [(n, params[n]) for n in _FOUND[key]]
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
    if key is not None:
        _FOUND[key] = [n for n, _ in found]
    return found


def require(model: nn.Module, key: Optional[Hashable] = None) -> list[tuple[str, nn.Parameter]]:
    found = discover(model, key)
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
        return elr.c_hat(self.w, self.g)

    @property
    def base(self) -> torch.Tensor:  # gradient norm at unit weight norm
        return elr.base_gradient(self.w, self.g)


class LayerDiagnostics:
    """Tracks the scale-invariant tensors of one model through training."""

    SUMMARY = ("spread_mean", "spread_early_mean", "spread_max", "overshoot_steps", "dead_layers_max",
               "grad_explosion_slope")  # the run-level summaries, as TrialResult names them

    def __init__(self, model: nn.Module, early_steps: int = 50, key: Optional[Hashable] = None) -> None:
        found = require(model, key)
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
        self.recent_log_c: list[torch.Tensor] = []  # log c_hat of the last SMOOTH log rows (smoothed spread)

    SMOOTH = 5  # log periods in the smoothed spread

    @torch.no_grad()
    def smoothed_c_hat(self, m: Measure) -> torch.Tensor:
        """The geometric mean of c_hat over this log period and the SMOOTH - 1 before it (a spread of
        per-batch c_hat reads mini-batch noise as spread; this one averages it out). A dead layer's
        c_hat of 0 makes its mean 0: it stays dead."""
        self.recent_log_c = [*self.recent_log_c, torch.log(m.c_hat.double())][-self.SMOOTH:]
        return torch.exp(torch.stack(self.recent_log_c).mean(0))

    @torch.no_grad()
    def measure(self) -> Measure:
        w = torch.stack(torch._foreach_norm(self.params))
        g = torch.stack(torch._foreach_norm([p.grad if p.grad is not None else torch.zeros_like(p)
                                             for p in self.params]))
        return Measure(w, g)

    @torch.no_grad()
    def record(self, m: Measure, lrs: torch.Tensor | float, step: int) -> torch.Tensor:
        """Fold one step into the run-level sums (device ops only); returns the per-layer ELRs."""
        e = m.c_hat * lrs
        spread = elr.spread(e)
        t = self.totals
        t["spread_sum"] += spread
        t["spread_max"] = torch.maximum(t["spread_max"], spread)
        t["overshoot_steps"] += (e > 1).any()
        t["dead_max"] = torch.maximum(t["dead_max"], (m.g == 0).sum())
        t["steps"] += 1
        if step < self.early_steps:
            t["early_sum"] += spread
            t["early_steps"] += 1
        if self.explosion_slope is None and step == 0:
            self.explosion_slope = grad_explosion_slope(m.g)  # once, at initialization
        return e

    # the actual relative update ||W_{t+1} - W_t|| / ||W_t||, measured at log steps only
    @torch.no_grad()
    def snapshot(self) -> None:
        self._before = torch._foreach_mul(self.params, 1.0)

    @torch.no_grad()
    def update_ratio(self) -> torch.Tensor:
        assert self._before is not None
        ratio = elr.relative_norms(torch._foreach_sub(self.params, self._before), self._before)
        self._before = None
        return ratio

    def summary(self) -> dict[str, float | None]:
        t = dict(zip(self.totals, torch.stack(list(self.totals.values())).tolist()))  # one host copy
        n, k = max(t["steps"], 1), max(t["early_steps"], 1)
        return {"spread_mean": t["spread_sum"] / n, "spread_early_mean": t["early_sum"] / k,
                "spread_max": t["spread_max"], "overshoot_steps": int(t["overshoot_steps"]),
                "dead_layers_max": int(t["dead_max"]),
                "grad_explosion_slope": self.explosion_slope}

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals, "explosion_slope": self.explosion_slope, "recent_log_c": self.recent_log_c}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.totals = s["totals"]
        self.explosion_slope = s["explosion_slope"]
        self.recent_log_c = s.get("recent_log_c", [])  # checkpoints of earlier versions have none


def log_row(step: int, m: Measure, e: torch.Tensor, lrs: torch.Tensor | float,
            update: torch.Tensor | None, smooth_c: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything per layer at a log step, and its scalar summaries for the history, in one host copy
    (the only sync of the diagnostics). Both are computed on the device, in float64. Besides the
    spread of the gradient ELRs: the spread of the actual relative updates (what momentum and Adam
    really apply; update) and of the smoothed c_hat (smooth_c, LayerDiagnostics.smoothed_c_hat)."""
    lr = (lrs if isinstance(lrs, torch.Tensor) else torch.full_like(m.w, float(lrs))).double()
    w, g, e = m.w.double(), m.g.double(), e.double()
    c = elr.c_hat(w, g)
    ok = elr.live(c)
    e_live = torch.where(ok, e, 0.0)
    cols = {"w_norm": w, "g_norm": g, "elr": e, "lr": lr, "c_hat": c, "base_grad": elr.base_gradient(w, g),
            "classic_elr": elr.classic_elr(lr, w)} | ({"update_ratio": update.double()} if update is not None else {})
    sums = {"dead_layers": (~ok).sum(), "overshooting_layers": (ok & (e > 1)).sum(), "elr_spread": elr.spread(e_live),
            "elr_spread_std": elr.spread_std(e_live), "elr_min": torch.where(ok, e, torch.inf).min(),
            "elr_max": torch.where(ok, e, -torch.inf).max(), "eta_crit": elr.critical_lr(c)}
    if update is not None:
        sums["elr_spread_update"] = elr.spread(torch.where(ok, update.double(), 0.0))
    if smooth_c is not None:
        sums["elr_spread_smooth"] = elr.spread(torch.where(ok, smooth_c.double(), 0.0))
    n = len(w)
    host = torch.cat([torch.stack(list(cols.values())).flatten(),
                      torch.stack([v.double() for v in sums.values()])]).cpu().tolist()
    row = {"step": step} | {k: host[i * n : (i + 1) * n] for i, k in enumerate(cols)}
    summary = dict(zip(sums, host[len(cols) * n :]))
    for k in ("dead_layers", "overshooting_layers"):
        summary[k] = int(summary[k])
    if n - summary["dead_layers"] < 2:  # fewer than two live layers: no spread to speak of
        summary = {"dead_layers": summary["dead_layers"], "overshooting_layers": summary["overshooting_layers"],
                   "elr_spread": 0.0, "elr_spread_std": 0.0}
    return row, summary

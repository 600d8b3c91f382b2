"""The effective-learning-rate quantities, each written once (docs/definitions.md, sections 2-4).

Every function takes per-layer values along the last dimension and works on any leading batch
dimensions (steps of a simulation, learning rates of a scan), on any device, in the input's dtype.
Nothing here syncs to the host.

A layer whose gradient is exactly zero (all its ReLUs dead) has c_hat = 0 and ELR = 0: it has no
place on a log scale. Spreads and eta_crit are therefore taken over the *live* layers (value > 0),
and the dead ones are counted apart, never clamped to a tiny number (a clamp would turn one dead
layer into a spread of hundreds of decades).
"""
from __future__ import annotations

import torch

TINY = 1e-30  # guards divisions by a weight norm; never used to give a dead layer an ELR


def live(x: torch.Tensor) -> torch.Tensor:
    """Which layers count: a positive c_hat, gradient norm or ELR."""
    return x > 0


def c_hat(w_norm: torch.Tensor, g_norm: torch.Tensor) -> torch.Tensor:
    """c_hat_l = ||g_l|| / ||W_l||: the ELR per unit learning rate."""
    return g_norm / w_norm.clamp_min(TINY)


def base_gradient(w_norm: torch.Tensor, g_norm: torch.Tensor) -> torch.Tensor:
    """c_l = ||g_l|| ||W_l||: the base gradient, constant under plain SGD in the weight-dynamics model
    (docs/definitions.md, section 3); c_hat = c_l / ||W_l||^2."""
    return g_norm * w_norm


def relative_norms(vectors: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """||v_l|| / ||W_l|| per tensor, in two fused norm passes (e.g. an optimizer's update direction)."""
    num = torch.stack(torch._foreach_norm(vectors))
    return num / torch.stack(torch._foreach_norm(params)).clamp_min(TINY)


def spread(elr: torch.Tensor) -> torch.Tensor:
    """ELR spread log10(max E / min E) over the live layers; 0 when fewer than two are live."""
    if elr.shape[-1] == 0:  # no layer at all (e.g. none live, filtered out): amax has nothing to reduce
        return elr.new_zeros(elr.shape[:-1])
    ok = live(elr)
    lg = torch.log10(torch.where(ok, elr, 1.0))
    hi = torch.where(ok, lg, -torch.inf).amax(-1)
    lo = torch.where(ok, lg, torch.inf).amin(-1)
    return torch.where(ok.sum(-1) >= 2, hi - lo, 0.0)


def spread_std(elr: torch.Tensor) -> torch.Tensor:
    """The secondary spread: the (population) standard deviation of log10 E over the live layers."""
    ok = live(elr)
    n = ok.sum(-1).clamp_min(1)
    lg = torch.where(ok, torch.log10(torch.where(ok, elr, 1.0)), 0.0)
    mean = lg.sum(-1, keepdim=True) / n.unsqueeze(-1)
    var = (torch.where(ok, lg - mean, 0.0) ** 2).sum(-1) / n
    return torch.where(ok.sum(-1) >= 2, var.sqrt(), 0.0)


def critical_lr(c: torch.Tensor) -> torch.Tensor:
    """eta_crit = 1 / sqrt(c_hat_max c_hat_min) over the live layers (docs/definitions.md, section 4).

    It centres log E on 0 (E_max E_min = 1), which minimizes the spread after one plain SGD step in
    the constant-base-gradient model. inf when no layer is live: nothing then limits the rate.
    """
    ok, hi, lo = live_extremes(c)
    return torch.where(ok, torch.rsqrt(hi * lo), torch.inf)


def live_extremes(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(any layer live, the largest and the smallest live value) along the last dimension: what
    every rate bound below reads."""
    ok = live(c)
    return ok.any(-1), torch.where(ok, c, 0.0).amax(-1), torch.where(ok, c, torch.inf).amin(-1)


def classic_elr(lr: torch.Tensor, w_norm: torch.Tensor) -> torch.Tensor:
    """The classic definition lr / ||W||^2 (it converges to a ratio c_k/c_l, not to 1)."""
    return lr / (w_norm * w_norm).clamp_min(TINY)


def rotation_lr(c: torch.Tensor) -> torch.Tensor:
    """eta~ = (c_hat_max^2 c_hat_min)^(-1/3) over the live layers: the rate that minimizes the spread
    after one plain SGD step when an overshooting layer's base gradient falls like cos(theta), theta =
    arctan(E) the angle the step turns it by (docs/definitions.md, section 10). It balances the top
    layer's post-step ELR, about E^-2, against the bottom one's, about E; eta~ = eta_crit 10^(-D/6)
    for a log10 spread D. inf when no layer is live."""
    ok, hi, lo = live_extremes(c)
    return torch.where(ok, (hi * hi * lo) ** (-1.0 / 3.0), torch.inf)


def overshoot_free_lr(c: torch.Tensor) -> torch.Tensor:
    """1 / c_hat_max over the live layers: the largest rate at which no layer's step is longer than the
    layer itself (ELR <= 1: no layer turns by more than 45 degrees). inf when no layer is live."""
    ok, hi, _ = live_extremes(c)
    return torch.where(ok, 1.0 / hi, torch.inf)

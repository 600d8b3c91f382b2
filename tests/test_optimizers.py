"""The optimizer registry: every entry's simulator rule is torch.optim's update, step for step, and
its update direction is the step torch.optim then takes (tests/test_diagnostics.py checks the latter
on a real network)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from elrbench.errors import SpecError
from elrbench.optimizers import OPTIMIZERS, create_optimizer
from elrbench.spec import OptimizerSpec, validate_spec

SETTINGS = {  # per registered optimizer, the settings to check (with and without decay)
    "sgd": [dict(weight_decay=0.0), dict(weight_decay=1e-2)],
    "sgdm": [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3)],
    "adam": [dict(weight_decay=0.0, betas=(0.9, 0.99)), dict(weight_decay=1e-2, betas=(0.9, 0.99))],
    "adamw": [dict(weight_decay=1e-2, betas=(0.9, 0.99))],
    "sgdp": [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-3)],
}


def test_every_registered_optimizer_is_checked():
    assert sorted(SETTINGS) == OPTIMIZERS.names()


@pytest.mark.parametrize("name,kw", [(n, kw) for n in SETTINGS for kw in SETTINGS[n]])
def test_simulator_rules_are_torch_optims(name, kw):
    # the simulator's rows are layers; in torch each row is a tensor of its own (scale-invariant, for sgdp)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 8))
    ps = [torch.nn.Parameter(torch.from_numpy(row.copy())) for row in w]
    kind = create_optimizer(OptimizerSpec(name=name, **kw))
    opt = kind.build(ps, 0.1)
    rule = kind.rule()
    for step in range(6):
        g = rng.standard_normal((5, 8))
        lr = 0.1 * (step + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        for p, row in zip(ps, g):
            p.grad = torch.from_numpy(row.copy())
        u = rule.direction(w, g)  # what the next step will do, before it is taken
        u_torch = torch.stack(kind.direction(opt, ps)).numpy()
        before = w.copy()
        kind.before_step(opt, ps)
        opt.step()
        rule.step(w, g, lr)
        np.testing.assert_allclose(w, torch.stack([p.detach() for p in ps]).numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(u, u_torch, rtol=1e-10, atol=1e-14)
        if not (name == "adamw" and kw["weight_decay"]):  # AdamW's decay acts beside the direction
            np.testing.assert_allclose(before - lr * u, w, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("bad,where,message", [
    ({"name": "sgd", "momentum": 0.9}, "momentum", "sgd has no momentum"),
    ({"name": "adam", "momentum": 0.9}, "momentum", "adam takes betas"),
    ({"name": "adamw", "nesterov": True}, "nesterov", "nesterov needs name: sgdm"),
    ({"name": "lion"}, "name", "unknown optimizer 'lion' (known: adam, adamw, sgd, sgdm, sgdp)"),
])
def test_each_optimizer_checks_its_own_fields(base_spec, bad, where, message):
    base_spec["grid"]["optimizer"] = [bad]
    with pytest.raises(SpecError) as e:
        validate_spec(base_spec)
    assert any(loc == f"grid.optimizer.0.{where}" and message in msg for loc, msg in e.value.problems), e.value.problems


def test_defaults_and_second_moments():
    assert OptimizerSpec(name="sgdm").momentum == 0.9 and OptimizerSpec(name="sgd").momentum is None
    assert create_optimizer(OptimizerSpec(name="adam", betas=(0.8, 0.95))).beta2 == 0.95
    assert create_optimizer(OptimizerSpec(name="sgdm")).beta2 is None
    assert [n for n in OPTIMIZERS.names() if OPTIMIZERS.get(n).fn.per_coordinate] == ["adam", "adamw"]


def test_sgdp_keeps_the_buffer_in_the_tangent_space():
    """After an overshoot, heavy-ball momentum's buffer points along W and pushes it outward; sgdp's
    projected buffer does not: the step is orthogonal to W (no weight decay), so ||W|| grows only by
    the gradient's part, sqrt(1 + E^2), never by the stale buffer."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(16)
    norms = {}
    for name in ("sgdm", "sgdp"):
        p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        kind = create_optimizer(OptimizerSpec(name=name))
        opt = kind.build([p], 1.0)
        grads = []
        for _ in range(3):
            g = rng.standard_normal(16)
            g -= g @ p.detach().numpy() / (p.detach().numpy() @ p.detach().numpy()) * p.detach().numpy()
            g *= 3 / np.linalg.norm(g)  # orthogonal to W, norm 3: long steps at lr 1
            p.grad = torch.from_numpy(g)
            grads.append(g)
            before = p.detach().numpy().copy()
            kind.before_step(opt, [p])
            opt.step()
            step = p.detach().numpy() - before
            if name == "sgdp":
                assert abs(step @ before) < 1e-9 * np.linalg.norm(step) * np.linalg.norm(before)
        norms[name] = np.linalg.norm(p.detach().numpy())
    assert norms["sgdm"] > norms["sgdp"]

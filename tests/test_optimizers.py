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
}


def test_every_registered_optimizer_is_checked():
    assert sorted(SETTINGS) == OPTIMIZERS.names()


@pytest.mark.parametrize("name,kw", [(n, kw) for n in SETTINGS for kw in SETTINGS[n]])
def test_simulator_rules_are_torch_optims(name, kw):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 8))
    p = torch.nn.Parameter(torch.from_numpy(w.copy()))
    kind = create_optimizer(OptimizerSpec(name=name, **kw))
    opt = kind.build([p], 0.1)
    rule = kind.rule()
    for step in range(6):
        g = rng.standard_normal((5, 8))
        lr = 0.1 * (step + 1)
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = torch.from_numpy(g.copy())
        u = rule.direction(w, g)  # what the next step will do, before it is taken
        u_torch = torch.stack(kind.direction(opt, [p]))[0].numpy()
        before = w.copy()
        opt.step()
        rule.step(w, g, lr)
        np.testing.assert_allclose(w, p.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(u, u_torch, rtol=1e-10, atol=1e-14)
        if not (name == "adamw" and kw["weight_decay"]):  # AdamW's decay acts beside the direction
            np.testing.assert_allclose(before - lr * u, w, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("bad,where,message", [
    ({"name": "sgd", "momentum": 0.9}, "momentum", "sgd has no momentum"),
    ({"name": "adam", "momentum": 0.9}, "momentum", "adam takes betas"),
    ({"name": "adamw", "nesterov": True}, "nesterov", "nesterov needs name: sgdm"),
    ({"name": "lion"}, "name", "unknown optimizer 'lion' (known: adam, adamw, sgd, sgdm)"),
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

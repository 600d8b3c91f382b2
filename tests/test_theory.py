from __future__ import annotations

import math

import pytest
import torch

from elrbench import elr
from elrbench.spec import OptimizerSpec
from elrbench.theory import closed_form, discrete_map, one_step_spread, simulate, steps_to_spread, wd_equilibrium
from elrbench.warmup import WARMUPS, create_warmup


def test_discrete_map_and_closed_form():
    e = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    assert torch.allclose(discrete_map(e), e / (1 + e * e))
    assert discrete_map(torch.tensor(100.0)).item() == pytest.approx(1 / 100, rel=1e-3)  # overshoot: ~1/E
    # the closed form tracks iterating the map for small ELRs
    x = torch.tensor([0.05], dtype=torch.float64)
    for _ in range(1000):
        x = discrete_map(x)
    assert x.item() == pytest.approx(closed_form(torch.tensor([0.05]), 1000).item(), rel=1e-2)


def test_plain_sgd_simulator_is_the_discrete_map():
    c = torch.logspace(1, -2, 7, dtype=torch.float64)
    tr = simulate(c, torch.ones(7), 0.3, 50)
    e = 0.3 * c
    for t in range(50):
        assert torch.allclose(tr.elr[t], e, rtol=1e-9)
        e = discrete_map(e)


def test_constant_lr_ratio_goes_to_one_as_the_closed_form_predicts():
    # two layers whose ELRs start 1000x apart
    c = torch.tensor([10.0, 0.01], dtype=torch.float64)
    predicted = steps_to_spread(c, 0.05)
    tr = simulate(c, torch.ones(2), 1.0, int(predicted * 1.1))
    assert elr.spread(tr.elr[0]).item() == pytest.approx(3.0)
    reached = int((tr.spread < 0.05).nonzero()[0])
    assert 0.9 * predicted <= reached <= 1.05 * predicted, (reached, predicted)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_equilibrium(momentum):
    eta, lam = 0.1, 5e-3
    c = torch.logspace(0, 1, 4, dtype=torch.float64)  # different base gradients, same equilibrium
    opt = OptimizerSpec(name="sgdm", momentum=momentum, weight_decay=lam) if momentum else OptimizerSpec(
        name="sgd", weight_decay=lam)
    tr = simulate(c, torch.ones(4), eta, 4000, optimizer=opt, dim=256)
    settled = tr.update_ratio[-1000:].mean(0)
    target = wd_equilibrium(eta, lam, momentum)
    assert torch.allclose(settled, torch.full_like(settled, target), rtol=0.05), (settled, target)


def test_critical_lr_minimizes_the_one_step_spread_in_the_model():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        c_hat = 10 ** (torch.rand(30, generator=gen, dtype=torch.float64) * 6 - 3)
        eta = elr.critical_lr(c_hat).item()
        lrs = eta * torch.logspace(-2, 2, 4001, dtype=torch.float64)
        best = lrs[one_step_spread(c_hat, lrs).argmin()].item()
        assert best == pytest.approx(eta, rel=3e-3)
        # at eta_crit the natural-log spread D falls to at most ln cosh(D/2), reached when a layer
        # sits at the centre (E = 1)
        d = math.log(c_hat.max().item() / c_hat.min().item())
        one = torch.tensor([eta], dtype=torch.float64)
        after = one_step_spread(c_hat, one).item() * math.log(10)
        assert after <= math.log(math.cosh(d / 2)) + 1e-9
        centred = torch.cat([c_hat, (c_hat.max() * c_hat.min()).sqrt()[None]])
        assert one_step_spread(centred, one).item() * math.log(10) == pytest.approx(math.log(math.cosh(d / 2)),
                                                                                  rel=1e-9)


def test_critical_warmup_in_the_model_collapses_the_spread_fast():
    # a 110-layer toy with exploding base gradients: spread 10^8.6 at init
    c = torch.logspace(10, 1.4, 110, dtype=torch.float64)
    warm = simulate(c, torch.ones(110), 0.1, 200, warmup=create_warmup("critical", {}, 200))
    const = simulate(c, torch.ones(110), 0.1, 200)
    assert warm.spread[0].item() == pytest.approx(8.6, abs=1e-6)
    assert warm.spread[3].item() < 1.0 and warm.spread[10].item() < 0.01
    assert const.spread[199].item() > 6
    assert warm.lr[0].item() < 1e-5 and warm.lr[-1].item() == 0.1
    assert all(warm.lr[i] <= warm.lr[i + 1] + 1e-12 for i in range(199))


def test_simulator_speed_budget_runs():
    # 110 layers, 10,000 steps: the size the issue names (its speed is in docs/performance.md)
    tr = simulate(torch.logspace(0, -4, 110), torch.ones(110), 0.1, 10_000)
    assert tr.elr.shape == (10_000, 110) and torch.isfinite(tr.elr).all()
    assert tr.spread[-1] < tr.spread[0]


@pytest.mark.parametrize("name", WARMUPS.names())
def test_every_warmup_can_be_simulated(name):
    # the simulator drives the real controller, as the training loop does
    c = torch.logspace(3, -1, 12, dtype=torch.float64)
    opt = OptimizerSpec(name="adamw") if name == "untuned_adam" else OptimizerSpec(name="sgdm")
    warm = create_warmup(name, {}, 300, opt)
    tr = simulate(c, torch.ones(12), 0.5, 300, optimizer=opt, warmup=warm, batch_acc=lambda t: float(t >= 20))
    assert torch.isfinite(tr.elr).all() and tr.lr.shape == (300,)
    plain = simulate(c, torch.ones(12), 0.5, 300, optimizer=opt)
    if name == "none":
        assert torch.equal(tr.elr, plain.elr)
    else:  # every warm-up changes the rates of the first steps
        assert not torch.equal(tr.lr[:5], plain.lr[:5]) or not torch.equal(tr.elr[:5], plain.elr[:5])


def test_simulated_warmups_behave_as_defined():
    c = torch.logspace(3, -1, 12, dtype=torch.float64)
    one = torch.ones(12)
    # constrained ELR: every layer has the same ELR and takes the same relative step
    tr = simulate(c, one, 0.5, 50, warmup=create_warmup("constrained", {}, 50))
    assert tr.spread.max().item() < 1e-12
    assert tr.update_ratio.max(1).values.div(tr.update_ratio.min(1).values).max().item() == pytest.approx(1, rel=1e-9)
    # he_classic: its rate until the training error falls below 80% (here: at step 20), then the target
    tr = simulate(c, one, 0.5, 50, warmup=create_warmup("he_classic", {}, 50), batch_acc=lambda t: float(t >= 20))
    assert tr.lr[:20].tolist() == [0.01] * 20 and tr.lr[20:].tolist() == [0.5] * 30
    # linear over 10 steps
    tr = simulate(c, one, 0.5, 20, warmup=create_warmup("linear", {"steps": 10}, 20))
    assert tr.lr[:10].tolist() == pytest.approx([0.05 * (i + 1) for i in range(10)])
    # critical from the update direction: under plain SGD the update is the gradient, so the same rates
    grad = simulate(c, one, 0.5, 20, warmup=create_warmup("critical", {}, 20))
    upd = simulate(c, one, 0.5, 20, warmup=create_warmup("critical", {"source": "update"}, 20))
    assert upd.lr.tolist() == pytest.approx(grad.lr.tolist(), rel=1e-9)
    with pytest.raises(ValueError, match="training accuracy"):
        simulate(c, one, 0.5, 5, warmup=create_warmup("he_classic", {}, 5))

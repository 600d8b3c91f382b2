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


# ---------------------------------------------------------------- the rotation-aware model (issue 13)
def _synthetic_step(s: torch.Tensor, w_norm: torch.Tensor, lr: float, dim: int = 16):
    """Brute force: per layer a tensor W (dim elements) and the scale-invariant loss -s <W/||W||, a>
    with a unit a orthogonal to W, so the gradient points at a and c_hat = s/||W||^2. One SGD step
    by autograd; returns the ELR before and after it, and the base gradient before and after."""
    n = len(s)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    a = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    a -= (a * w).sum(1, keepdim=True) / (w * w).sum(1, keepdim=True) * w
    a /= a.norm(dim=1, keepdim=True)
    w = (w / w.norm(dim=1, keepdim=True) * w_norm[:, None]).requires_grad_()

    def grads(w):
        loss = -(s * ((w / w.norm(dim=1, keepdim=True)) * a).sum(1)).sum()
        return torch.autograd.grad(loss, w)[0]

    g0 = grads(w)
    w1 = (w - lr * g0).detach().requires_grad_()
    g1 = grads(w1)
    e0 = lr * g0.norm(dim=1) / w.detach().norm(dim=1)
    e1 = lr * g1.norm(dim=1) / w1.detach().norm(dim=1)
    base = lambda g, w: (g.norm(dim=1) * w.norm(dim=1)).detach()  # noqa: E731
    return e0.detach(), e1.detach(), base(g0, w), base(g1, w1)


def test_the_rotation_map_is_one_sgd_step_of_a_synthetic_scale_invariant_model():
    from elrbench.theory import rotation_map

    s = torch.tensor([0.01, 0.1, 1.0, 5.0, 25.0], dtype=torch.float64)
    e0, e1, c0, c1 = _synthetic_step(s, torch.ones(5, dtype=torch.float64), 1.0)
    assert e0.tolist() == pytest.approx(s.tolist(), rel=1e-12)
    assert e1.tolist() == pytest.approx(rotation_map(e0).tolist(), rel=1e-9)
    # the base gradient falls like cos(theta), theta = arctan(E); the constant model keeps it
    assert (c1 / c0).tolist() == pytest.approx(torch.cos(torch.atan(e0)).tolist(), rel=1e-9)
    assert e1[-1].item() < 0.1 * discrete_map(e0)[-1].item()  # at E = 25 the constant model is far off


@pytest.mark.parametrize("decades", [2, 4, 6])
def test_eta_tilde_minimizes_the_one_step_spread_of_the_synthetic_model(decades):
    s = torch.logspace(-decades, 0, 6, dtype=torch.float64)
    one = torch.ones(6, dtype=torch.float64)
    c = s  # c_hat = s / ||W||^2 with ||W|| = 1
    lrs = elr.critical_lr(c) * torch.logspace(-3, 1, 81, dtype=torch.float64)
    spreads = torch.stack([elr.spread(_synthetic_step(s, one, float(lr))[1]) for lr in lrs])
    best = float(lrs[int(spreads.argmin())])
    assert best / float(elr.rotation_lr(c)) == pytest.approx(1, abs=0.15)  # the grid's step is 12%
    assert float(elr.rotation_lr(c)) == pytest.approx(float(elr.critical_lr(c)) * 10 ** (-decades / 6), rel=1e-9)
    assert one_step_spread(c, lrs, "rotation").tolist() == pytest.approx(spreads.tolist(), abs=1e-9)


def test_the_closed_form_with_its_first_step_term():
    e0 = torch.tensor([0.01, 0.5, 3.0, 30.0], dtype=torch.float64)
    e = e0.clone()
    for t in range(1, 201):
        e = discrete_map(e)
        with_term = closed_form(e0, t, first_step=True)
        assert (with_term / e - 1).abs().max().item() < 0.05, t
    assert (closed_form(e0, 1) / discrete_map(e0))[-1].item() > 5  # without it, an overshooting layer is far off


@pytest.mark.parametrize("name", ["cap", "rotation", "critical"])
def test_per_step_warmups_never_nan_never_above_the_schedule_and_checkpoint(name):
    from elrbench.diagnostics import Measure
    from elrbench.warmup import StepContext

    cases = [torch.logspace(-3, 2, 8, dtype=torch.float64),  # overshooting layers
             torch.tensor([0.0, 0.0, 1e-3, 5.0], dtype=torch.float64),  # dead layers
             torch.zeros(4, dtype=torch.float64),  # no live layer
             torch.tensor([float("nan"), 1.0, 2.0], dtype=torch.float64)]  # a non-finite gradient norm
    for c in cases:
        w = create_warmup(name, {}, 100)
        for step, sched in enumerate([0.01, 1.0, 100.0]):
            ctx = StepContext(measure=Measure(torch.ones_like(c), c))
            lr = w.lr(step, sched, ctx)
            assert math.isfinite(lr) and 0 < lr <= sched, (c, sched, lr)
        state = w.state_dict()
        again = create_warmup(name, {}, 100)
        again.load_state_dict(state)
        assert again.state_dict() == state
    cap = create_warmup("cap", {}, 100)
    c = torch.tensor([0.5, 20.0], dtype=torch.float64)
    assert cap.lr(0, 1.0, StepContext(measure=Measure(torch.ones(2, dtype=torch.float64), c))) == pytest.approx(0.05)
    assert cap.in_warmup(0) and not cap.in_warmup(1)


def test_cap_and_rotation_in_the_model_narrow_the_spread_and_never_stop():
    c = torch.logspace(3, -1, 12, dtype=torch.float64)
    one = torch.ones(12)
    plain = simulate(c, one, 1.0, 100)
    for name in ("cap", "rotation"):
        tr = simulate(c, one, 1.0, 100, warmup=create_warmup(name, {}, 100))
        assert tr.spread[:50].mean() < plain.spread[:50].mean()
        assert (tr.lr <= 1.0).all()
    cap = simulate(c, one, 1.0, 100, warmup=create_warmup("cap", {}, 100))
    assert (cap.elr.max(1).values <= 1 + 1e-9).all()  # no layer above ELR 1, ever


@pytest.mark.parametrize("ema", [0.5, 0.8])
def test_critical_ema_is_an_exponential_ramp_of_rate_ema_to_the_minus_half(ema):
    """docs/definitions.md, section 6-8: after the first step's overshoot the averaged c_hat_max decays
    like ema^t, so eta_crit grows by ema^(-1/2) per step: a ramp whose rate the option sets."""
    c = torch.logspace(3, -1, 12, dtype=torch.float64)
    tr = simulate(c, torch.ones(12), 100.0, 10, warmup=create_warmup("critical", {"ema": ema}, 10))
    assert (tr.lr[1:6] / tr.lr[:5]).tolist() == pytest.approx([ema**-0.5] * 5, rel=1e-3)


def test_simulator_takes_each_layers_element_count():
    # Adam's first step is sign(g) per coordinate (bias-corrected, eps tiny): ||u_l|| = sqrt(dim_l)
    # exactly, so the relative update is lr sqrt(dim_l) / ||W_l||; the old fixed dim 32 would give
    # every layer lr sqrt(32) / ||W_l||
    dims = [16, 400, 2304]
    c = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    w0 = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    adam = OptimizerSpec(name="adam", eps=1e-30)
    tr = simulate(c, w0, 1e-3, 3, optimizer=adam, dim=dims)
    assert tr.update_ratio[0].tolist() == pytest.approx([1e-3 * math.sqrt(d) / w for d, w in zip(dims, w0.tolist())],
                                                        rel=1e-9)
    # plain SGD does not depend on the element counts: the same discrete map
    a, b = simulate(c * 3, w0, 0.5, 20, dim=dims), simulate(c * 3, w0, 0.5, 20, dim=32)
    assert torch.allclose(a.elr, b.elr, rtol=1e-9)
    with pytest.raises(ValueError, match="at least 2 elements"):
        simulate(c, w0, 0.1, 2, dim=[1, 4, 4])

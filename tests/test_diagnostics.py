from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from elrbench import elr
from elrbench.diagnostics import LayerDiagnostics, Measure, discover, grad_explosion_slope, log_row, require, self_check
from elrbench.errors import NoScaleInvariantTensors
from elrbench.store import StudyStore
from elrbench.train import run_trial
from elrbench.warmup import create_warmup
from elrbench.workloads import MODELS, create_model, load_dataset
from tests.conftest import deep_noskip

VARIANTS = {"resnet_v1": [{}, {"skip": "no_short"}, {"shortcut": "B"}], "plain_cnn": [{"downsample": 1}],
            "bn_mlp": [{}]}
DEPTH = {"resnet_v1": 14, "plain_cnn": 5, "bn_mlp": 5}


def _model(name, norm="bn", options=None, depth=None):
    torch.manual_seed(0)
    return create_model(name, depth or DEPTH[name], in_shape=(1, 8, 8), num_classes=10, width=8, norm=norm,
                        options=options)


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_discovery_matches_the_model_and_passes_the_self_check(name, norm):
    data = load_dataset("digits")
    for opts in VARIANTS[name]:
        m = _model(name, norm, opts)
        found = discover(m)
        # discovery from the graph agrees with what the model declares
        assert [n for n, _ in found] == [n for n, _ in m.normalized_weights()]
        checks = self_check(m, data.x_train[:16], data.y_train[:16])
        assert len(checks) == len(found) and all(c.ok for c in checks), [c for c in checks if not c.ok]


@pytest.mark.parametrize("name", MODELS.names())
def test_a_model_without_normalization_has_none(name):
    m = _model(name, "none")
    assert discover(m) == []
    with pytest.raises(NoScaleInvariantTensors, match="no weight followed directly by a normalization"):
        require(m)


def test_self_check_catches_a_tensor_that_is_not_invariant():
    # a biased linear before LayerNorm is not scale-invariant: discovery leaves it out, and a forced
    # check of such a layer fails
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16, bias=True), torch.nn.LayerNorm(16),
                              torch.nn.ReLU(), torch.nn.Linear(16, 10))
    assert discover(net) == []
    net2 = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16, bias=False), torch.nn.BatchNorm1d(16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    assert [n for n, _ in discover(net2)] == ["1.weight"] and all(c.ok for c in self_check(net2, x, y))
    with torch.no_grad():
        net2[1].weight.zero_()  # a zero weight: BN divides 0 by eps, scaling it changes the loss
        net2[1].weight[0, 0] = 1e-6
    assert not all(c.ok for c in self_check(net2, x, y))


def test_norm_identity_after_one_sgd_step_on_a_real_network():
    # docs/definitions.md section 3: ||W_{t+1}||^2 = ||W_t||^2 + eta^2 ||g_t||^2 for every scale-invariant tensor
    data = load_dataset("digits")
    m = _model("resnet_v1", "bn", {"skip": "no_short"}, depth=20).double()
    for mod in m.modules():  # BatchNorm's eps is what makes <g, W> = 0 inexact; take it out of the way
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.eps = 1e-14
    params = [p for _, p in require(m)]
    F.cross_entropy(m(data.x_train[:128].double()), data.y_train[:128]).backward()
    eta = 0.5
    before = [(p.detach().norm() ** 2).item() for p in params]
    grads = [(p.grad.norm() ** 2).item() for p in params]
    opt = torch.optim.SGD(m.parameters(), lr=eta)
    opt.step()
    after = [(p.detach().norm() ** 2).item() for p in params]
    for b, g, a in zip(before, grads, after):
        assert a - b == pytest.approx(eta**2 * g, rel=1e-6)
    # and it is not trivial: the norms did grow
    assert sum(a - b for a, b in zip(after, before)) > 1e-3


def test_measure_is_batched_and_matches_per_tensor_norms():
    m = _model("plain_cnn", options={"downsample": 1})
    x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
    F.cross_entropy(m(x), y).backward()
    d = LayerDiagnostics(m)
    meas = d.measure()
    assert torch.allclose(meas.w, torch.stack([p.detach().norm() for p in d.params]))
    assert torch.allclose(meas.g, torch.stack([p.grad.norm() for p in d.params]))
    assert torch.allclose(meas.c_hat, meas.g / meas.w)
    assert torch.allclose(elr.critical_lr(meas.c_hat), 1 / torch.sqrt(meas.c_hat.max() * meas.c_hat.min()))
    e = d.record(meas, 0.1, 0)
    assert torch.allclose(e, 0.1 * meas.c_hat)
    s = d.summary()
    assert s["spread_mean"] == pytest.approx(torch.log10(e.max() / e.min()).item(), rel=1e-5)
    assert s["grad_explosion_slope"] == pytest.approx(grad_explosion_slope(meas.g))


def test_dead_layers_are_counted_not_clamped():
    m = Measure(w=torch.tensor([1.0, 2.0, 1.0]), g=torch.tensor([4.0, 0.0, 0.01]))
    assert elr.spread(0.1 * m.c_hat).item() == pytest.approx(math.log10(400))  # the dead layer is left out
    assert elr.critical_lr(m.c_hat).item() == pytest.approx(1 / math.sqrt(4.0 * 0.01))
    layers, sc = log_row(7, m, 0.1 * m.c_hat, 0.1, None)
    assert layers["step"] == 7 and layers["g_norm"] == [4.0, 0.0, pytest.approx(0.01)]
    assert sc["dead_layers"] == 1 and sc["elr_spread"] == pytest.approx(math.log10(400))
    assert sc["eta_crit"] == pytest.approx(1 / math.sqrt(4.0 * 0.01)) and sc["elr_min"] == pytest.approx(0.001)
    assert sc["elr_spread_std"] == pytest.approx(math.log10(400) / 2)  # two live layers: half their distance
    dead = Measure(w=torch.ones(2), g=torch.zeros(2))
    assert log_row(1, dead, torch.zeros(2), 0.1, None)[1] == {"dead_layers": 2, "overshooting_layers": 0,
                                                              "elr_spread": 0.0, "elr_spread_std": 0.0}
    assert elr.critical_lr(dead.c_hat).item() == math.inf  # nothing live limits the rate
    # batched over leading dimensions, with the same masking per row
    rows = torch.tensor([[1.0, 10.0, 0.0], [0.0, 0.0, 5.0]])
    assert elr.spread(rows).tolist() == [1.0, 0.0]
    w = create_warmup("constrained", {}, 10)
    from elrbench.warmup import StepContext

    scales = w.layer_scales(StepContext(measure=m))
    assert scales[1].item() == 1.0 and torch.isfinite(scales).all()
    live = (m.c_hat * scales)[[0, 2]]
    assert (live.max() / live.min()).item() == pytest.approx(1.0)


def test_explosion_slope_sign():
    assert grad_explosion_slope(torch.tensor([1000.0, 100.0, 10.0, 1.0])) == pytest.approx(-1.0)
    assert grad_explosion_slope(torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(0.0)


@pytest.mark.parametrize("spec", [
    dict(name="sgdm", momentum=0.9, weight_decay=1e-3),
    dict(name="sgdm", momentum=0.9, nesterov=True),
    dict(name="sgd"),
    dict(name="sgd", weight_decay=1e-2),
    dict(name="adam", weight_decay=1e-2),
    dict(name="adamw", weight_decay=0.0),
])
def test_update_direction_predicts_the_step_the_optimizer_takes(spec):
    from elrbench.optimizers import create_optimizer
    from elrbench.spec import OptimizerSpec

    m = _model("bn_mlp")
    params = [p for _, p in require(m)]
    kind = create_optimizer(OptimizerSpec(**spec))
    opt = kind.build(list(m.parameters()), 0.01)
    for step in range(3):
        x, y = torch.randn(32, 1, 8, 8), torch.arange(32) % 10
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        predicted = elr.relative_norms(kind.direction(opt, params), params)
        before = [p.detach().clone() for p in params]
        opt.step()
        actual = torch.stack([(p.detach() - b).norm() / b.norm() / 0.01 for p, b in zip(params, before)])
        assert torch.allclose(predicted, actual, rtol=1e-4), (step, predicted, actual)


# ---------------------------------------------------------------- the loop's per-layer records
def _spec(base_spec, **grid):
    return deep_noskip(base_spec, steps=12, **grid)


def test_layer_rows_are_logged_and_consistent(base_spec):
    s = _spec(base_spec)
    t = s.expand()[0]
    store = StudyStore.create(s)
    r = run_trial(t, store)
    names, rows = store.layers(t.trial_id)
    assert len(names) == 19 and len(rows) == 12 and [row["step"] for row in rows] == list(range(1, 13))
    for row in rows:
        w, g, e, lr, u = (torch.tensor(row[k], dtype=torch.float64)
                          for k in ("w_norm", "g_norm", "elr", "lr", "update_ratio"))
        assert torch.allclose(e, lr * g / w, rtol=1e-5)
        # plain SGD without momentum or decay: the actual relative update is exactly the ELR
        assert torch.allclose(u, e, rtol=1e-3)
    hist = [h for h in store.history(t.trial_id) if "elr_spread" in h]
    assert len(hist) == 12 and all(h["elr_spread"] >= 0 and h["eta_crit"] > 0 for h in hist)
    for key in ("spread_mean", "spread_early_mean", "spread_max", "grad_explosion_slope"):
        assert isinstance(getattr(r, key), float)
    assert r.spread_max >= r.spread_mean >= 0
    assert r.grad_explosion_slope < 0  # no-skip BN network: gradients grow towards the input
    assert r.overshoot_steps == sum(h["overshooting_layers"] > 0 for h in hist)
    for h, row in zip(hist, rows):  # the history's summaries are those of the per-layer rows
        e = torch.tensor(row["elr"], dtype=torch.float64)
        assert h["elr_spread"] == pytest.approx(math.log10(e.max() / e.min()), rel=1e-12)
        assert h["eta_crit"] == pytest.approx(1 / math.sqrt(max(row["c_hat"]) * min(row["c_hat"])), rel=1e-12)


def test_critical_warmup_sets_eta_crit_in_the_loop(base_spec):
    s = _spec(base_spec, lr=[10.0], warmup=["critical"])
    t = s.expand()[0]
    store = StudyStore.create(s)
    r = run_trial(t, store)
    _, rows = store.layers(t.trial_id)
    first = rows[0]
    c_hat = torch.tensor(first["g_norm"]) / torch.tensor(first["w_norm"])
    eta = (1 / torch.sqrt(c_hat.max() * c_hat.min())).item()
    assert eta < 10.0  # the warm-up is active at this target
    assert first["lr"][0] == pytest.approx(eta, rel=1e-4)
    assert r.warmup_steps >= 1
    lrs = [row["lr"][0] for row in rows]
    done = next((i for i, lr in enumerate(lrs) if lr == 10.0), None)
    if done is not None:  # once it ends it never comes back
        assert all(lr == 10.0 for lr in lrs[done:])


def test_constrained_gives_every_layer_the_same_elr(base_spec):
    s = _spec(base_spec, warmup=["constrained"])
    t = s.expand()[0]
    store = StudyStore.create(s)
    r = run_trial(t, store)
    _, rows = store.layers(t.trial_id)
    for row in rows:
        e = torch.tensor(row["elr"])
        assert (e.max() / e.min()).item() == pytest.approx(1.0, rel=1e-4)
        # and the update it really takes matches (plain SGD: per-layer rates via gradient factors)
        assert torch.allclose(torch.tensor(row["update_ratio"]), e, rtol=1e-3)
    assert r.spread_mean < 1e-4


def test_warmup_controllers():
    from elrbench.spec import OptimizerSpec

    w = create_warmup("exponential", {"tau": 10}, 100)
    assert w.lr(0, 1.0) == pytest.approx(1 - torch.exp(torch.tensor(-0.1)).item())
    assert w.lr(99, 1.0) > 0.9999 and w.in_warmup(0) and not w.in_warmup(60)
    u = create_warmup("untuned_adam", {}, 1000, OptimizerSpec(name="adamw", betas=(0.9, 0.99)))
    assert u.steps == 200 and u.lr(99, 1.0) == pytest.approx(0.5) and u.lr(199, 1.0) == 1.0
    he = create_warmup("he_classic", {}, 100)
    from elrbench.warmup import StepContext

    accs = iter([0.1, 0.15, 0.3, 0.05])
    ctx = StepContext(batch_acc=lambda: next(accs))
    assert [he.lr(t, 0.1, ctx) for t in range(4)] == [0.01, 0.01, 0.1, 0.1]  # error < 80% at step 2, for good
    assert he.in_warmup(1) and not he.in_warmup(2)


def test_update_and_smoothed_spreads_in_log_rows_and_results(base_spec):
    """Plain SGD's actual relative update is lr ||g|| / ||W||, the ELR itself: its spread equals the
    gradient spread. Momentum's update differs. The smoothed spread of the first log row is that row's
    spread (one period to average); later it averages c_hat over up to 5 periods."""
    from elrbench.spec import validate_spec
    from elrbench.train import run_trial

    rows = {}
    for opt in ("sgd", "sgdm"):
        d = copy.deepcopy(base_spec)
        d["grid"]["optimizer"] = [opt]
        d["budget"].update(steps=30, log_every=5)
        h = []
        r = run_trial(validate_spec(d).expand()[0], progress=lambda s, n, row, h=h: h.append(row))
        logged = [x for x in h if "elr_spread" in x]
        assert r.spread_update_mean == pytest.approx(sum(x["elr_spread_update"] for x in logged) / len(logged))
        assert r.spread_smooth_mean == pytest.approx(sum(x["elr_spread_smooth"] for x in logged) / len(logged))
        assert logged[0]["elr_spread_smooth"] == pytest.approx(logged[0]["elr_spread"], rel=1e-6)
        rows[opt] = logged
    for x in rows["sgd"]:
        assert x["elr_spread_update"] == pytest.approx(x["elr_spread"], rel=1e-4)
    assert any(abs(x["elr_spread_update"] - x["elr_spread"]) > 1e-3 for x in rows["sgdm"][1:])
    assert any(abs(x["elr_spread_smooth"] - x["elr_spread"]) > 1e-3 for x in rows["sgd"][1:])


def test_critical_momentum_correction_and_layer_cap_by_hand():
    from elrbench.spec import OptimizerSpec
    from elrbench.warmup import StepContext

    # c_hat = [4, 0.25, 1] at ||W|| = 1: eta_crit = 1/sqrt(4 * 0.25) = 1
    c = torch.tensor([4.0, 0.25, 1.0], dtype=torch.float64)
    ctx = StepContext(measure=Measure(torch.ones(3, dtype=torch.float64), c))
    sgdm = OptimizerSpec(name="sgdm", momentum=0.9)
    fixed = create_warmup("critical", {"momentum_correction": True}, 10, sgdm)
    assert fixed.lr(0, 5.0, ctx) == pytest.approx(0.1)  # (1 - 0.9) * 1
    assert create_warmup("critical", {}, 10, sgdm).lr(0, 5.0, ctx) == pytest.approx(1.0)
    plain = create_warmup("critical", {"momentum_correction": True}, 10, OptimizerSpec(name="sgd"))
    assert plain.lr(0, 5.0, ctx) == pytest.approx(1.0)  # no momentum: no correction
    assert fixed.lr(1, 0.05, ctx) == 0.05 and not fixed.in_warmup(1)  # 0.1 >= 0.05: it ends for good
    assert fixed.lr(2, 5.0, ctx) == 5.0
    # layer_cap at eta 0.5: ELRs [2, 0.125, 0.5] -> factors [1/2, 1, 1]; the rate itself is untouched
    cap = create_warmup("layer_cap", {}, 10)
    assert cap.lr(0, 0.5, ctx) == 0.5
    assert cap.layer_scales(ctx).tolist() == pytest.approx([0.5, 1.0, 1.0]) and cap.in_warmup(0)
    assert cap.lr(1, 0.1, ctx) == 0.1
    assert cap.layer_scales(ctx).tolist() == [1.0, 1.0, 1.0] and not cap.in_warmup(1)


def test_layer_cap_in_the_loop_caps_each_layer_at_elr_one(base_spec):
    s = _spec(base_spec, lr=[10.0], warmup=["layer_cap"])
    t = s.expand()[0]
    r = run_trial(t, store := StudyStore.create(s))
    _, rows = store.layers(t.trial_id)
    for row in rows:
        e, g, w = (torch.tensor(row[k], dtype=torch.float64) for k in ("elr", "g_norm", "w_norm"))
        # by hand: each layer's ELR is min(lr c_hat_l, 1), with c_hat_l = ||g_l|| / ||W_l||
        assert torch.allclose(e, (10.0 * g / w).clamp(max=1.0), rtol=1e-5)
        assert torch.allclose(torch.tensor(row["update_ratio"], dtype=torch.float64), e, rtol=1e-3)
        # the per-layer rates: 10, or 1 / c_hat_l where that is lower
        assert torch.allclose(torch.tensor(row["lr"], dtype=torch.float64), (w / g).clamp(max=10.0), rtol=1e-5)
    assert float(torch.tensor(rows[0]["elr"]).max()) == pytest.approx(1.0)  # it binds at the first step
    assert r.warmup_steps >= 1


def test_critical_momentum_correction_in_the_loop(base_spec):
    s = _spec(base_spec, lr=[10.0], optimizer=[{"name": "sgdm", "momentum": 0.9}],
              warmup=[{"name": "critical", "momentum_correction": True}])
    t = s.expand()[0]
    run_trial(t, store := StudyStore.create(s))
    first = store.layers(t.trial_id)[1][0]
    c_hat = torch.tensor(first["g_norm"]) / torch.tensor(first["w_norm"])
    assert first["lr"][0] == pytest.approx(0.1 / torch.sqrt(c_hat.max() * c_hat.min()).item(), rel=1e-4)


def test_discovery_is_traced_once_per_architecture(monkeypatch):
    import elrbench.diagnostics as d

    traced = []
    real = torch.fx.symbolic_trace
    monkeypatch.setattr(torch.fx, "symbolic_trace", lambda m: (traced.append(m), real(m))[1])
    monkeypatch.setattr(d, "_FOUND", {})
    a, b, c = _model("bn_mlp"), _model("bn_mlp"), _model("bn_mlp", depth=3)
    first = discover(a, key=("bn_mlp", 5))
    again = discover(b, key=("bn_mlp", 5))
    assert len(traced) == 1
    # the same names, and the second model's own tensors
    assert [n for n, _ in again] == [n for n, _ in first] == [n for n, _ in b.normalized_weights()]
    assert all(p is q for (_, p), (_, q) in zip(again, b.normalized_weights()))
    assert not any(p is q for (_, p), (_, q) in zip(again, first))
    # another key is traced; no key is always traced
    assert [n for n, _ in discover(c, key=("bn_mlp", 3))] == [n for n, _ in c.normalized_weights()]
    discover(a)
    assert len(traced) == 3

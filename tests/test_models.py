from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elrbench.workloads import MODELS, WorkloadError, check_depth, create_model

DEPTHS = {"resnet_v1": [8, 14], "plain_cnn": [2, 5], "bn_mlp": [2, 6]}
VARIANTS = {"resnet_v1": [{}, {"skip": "no_short"}, {"shortcut": "B"}], "plain_cnn": [{}, {"downsample": 1}],
            "bn_mlp": [{}]}


def _build(name, depth, norm="bn", options=None, in_shape=(3, 8, 8)):
    torch.manual_seed(0)
    return create_model(name, depth, in_shape=in_shape, num_classes=5, width=8, norm=norm, options=options)


def test_registry_names():
    assert MODELS.names() == ["bn_mlp", "plain_cnn", "resnet_v1"]
    with pytest.raises(WorkloadError, match=r"unknown model 'vgg' \(known: bn_mlp, plain_cnn, resnet_v1\)"):
        MODELS.get("vgg")


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("norm", ["bn", "ln", "gn", "none"])
def test_forward_backward_and_depth(name, norm):
    for depth in DEPTHS[name]:
        for opts in VARIANTS[name]:
            m = _build(name, depth, norm, opts)
            x = torch.randn(6, 3, 8, 8)
            out = m(x)
            assert out.shape == (6, 5)
            F.cross_entropy(out, torch.arange(6) % 5).backward()
            assert all(p.grad is not None for p in m.parameters())
            assert m.depth == depth
            # depth counts weight layers on the main path: convolutions/linears minus shortcut projections
            layers = [mod for n, mod in m.named_modules() if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))
                      and "project" not in n]
            assert len(layers) == depth
            normed = m.normalized_weights()
            if norm == "none":
                assert normed == []
            else:
                extra = 2 if opts.get("shortcut") == "B" else 0  # two stride/width changes with projections
                assert len(normed) == depth - 1 + extra


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_normalized_weights_are_scale_invariant(name, norm):
    m = _build(name, DEPTHS[name][-1], norm, VARIANTS[name][-1])
    m.train()
    x = torch.randn(16, 3, 8, 8, dtype=torch.float64)
    y = torch.arange(16) % 5
    m.double()
    for pname, w in m.normalized_weights():
        loss0 = F.cross_entropy(m(x), y)
        m.zero_grad()
        loss0.backward()
        g = w.grad.clone()
        # the gradient is orthogonal to the weight
        # exact but for the eps of the norm layer
        assert abs(torch.sum(g * w).item()) <= 1e-4 * (g.norm() * w.norm()).item(), pname
        with torch.no_grad():
            w.mul_(3.0)
        loss3 = F.cross_entropy(m(x), y)
        with torch.no_grad():
            w.div_(3.0)
        assert loss3.item() == pytest.approx(loss0.item(), rel=1e-6, abs=1e-8), pname


def test_a_non_normalized_weight_is_not_scale_invariant():
    # the check above can fail: the classifier head is not followed by a normalization
    m = _build("plain_cnn", 3, "bn").double()
    x, y = torch.randn(16, 3, 8, 8, dtype=torch.float64), torch.arange(16) % 5
    loss0 = F.cross_entropy(m(x), y).item()
    with torch.no_grad():
        m.head.weight.mul_(3.0)
    assert abs(F.cross_entropy(m(x), y).item() - loss0) > 1e-3


def test_depth_rules():
    assert check_depth("resnet_v1", 20) is None and check_depth("resnet_v1", 110) is None
    assert "6n+2" in check_depth("resnet_v1", 21)
    assert check_depth("plain_cnn", 1) is not None
    assert "downsample" in check_depth("plain_cnn", 3, {"downsample": 3})
    with pytest.raises(WorkloadError):
        _build("resnet_v1", 10)


def test_init_kaiming_fan_out_matches_he():
    m = _build("plain_cnn", 3, "bn")
    w = m.features[2].layer.weight  # second conv: 8 -> 8 channels, 3x3
    expected_std = (2.0 / (8 * 9)) ** 0.5
    assert w.std().item() == pytest.approx(expected_std, rel=0.15)
    d = create_model("plain_cnn", 3, in_shape=(3, 8, 8), num_classes=5, width=8, init="torch_default")
    assert d.features[2].layer.weight.std().item() < 0.7 * expected_std  # torch default is narrower


def test_resnet_shapes_follow_he():
    m = _build("resnet_v1", 20, in_shape=(3, 32, 32))
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert {c.out_channels for c in convs} == {8, 16, 32}  # widths w, 2w, 4w
    assert sum(c.stride == (2, 2) for c in convs) == 2

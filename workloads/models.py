"""Deep normalized networks: resnet_v1 (He et al. 2016, CIFAR variant), plain_cnn, bn_mlp.

Every model reports its depth (weight layers on the longest path: convolutions and linears) and
which weight tensors feed straight into a normalization layer (the scale-invariant ones).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .registry import Registry, WorkloadError

Norm = Literal["bn", "ln", "gn", "none"]
Init = Literal["kaiming_fan_out", "torch_default"]

MODELS: Registry[Callable[..., ElrModel]] = Registry("model")


class Options(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def make_norm(norm: Norm, channels: int, conv: bool) -> nn.Module:
    """The one map from a normalization name to a layer.

    ln on feature maps is GroupNorm(1, C) (LayerNorm over C,H,W with a per-channel affine);
    gn uses gcd(C, 8) groups so that every width divides evenly.
    """
    if norm == "bn":
        return nn.BatchNorm2d(channels) if conv else nn.BatchNorm1d(channels)
    if norm == "ln":
        return nn.GroupNorm(1, channels) if conv else nn.LayerNorm(channels)
    if norm == "gn":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if norm == "none":
        return nn.Identity()
    raise WorkloadError(f"unknown normalization '{norm}' (known: bn, gn, ln, none)")


class Normed(nn.Module):
    """A weight layer followed directly by a normalization (nothing in between)."""

    def __init__(self, layer: nn.Module, norm: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.norm = norm

    @property
    def normalized(self) -> bool:
        return not isinstance(self.norm, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(x))


def conv_norm(cin: int, cout: int, norm: Norm, stride: int = 1, kernel: int = 3) -> Normed:
    # A bias in front of a normalization is redundant and would break scale invariance.
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=norm == "none")
    return Normed(conv, make_norm(norm, cout, conv=True))


def linear_norm(fin: int, fout: int, norm: Norm) -> Normed:
    return Normed(nn.Linear(fin, fout, bias=norm == "none"), make_norm(norm, fout, conv=False))


class ElrModel(nn.Module):
    depth: int

    def normalized_weights(self) -> list[tuple[str, nn.Parameter]]:
        """(name, weight) of every tensor whose output goes straight into a normalization layer."""
        return [
            (f"{name}.layer.weight" if name else "layer.weight", m.layer.weight)
            for name, m in self.named_modules()
            if isinstance(m, Normed) and m.normalized
        ]

    def init_weights(self, init: Init) -> None:
        if init == "torch_default":
            return
        for m in self.modules():
            if isinstance(m, Normed):  # the classifier head keeps torch's default init
                # He et al. 2015: N(0, 2/fan_out) for layers followed by ReLU.
                nn.init.kaiming_normal_(m.layer.weight, mode="fan_out", nonlinearity="relu")
                if m.layer.bias is not None:
                    nn.init.zeros_(m.layer.bias)


def create_model(
    name: str,
    depth: int,
    *,
    in_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    norm: Norm = "bn",
    init: Init = "kaiming_fan_out",
    options: dict | None = None,
) -> ElrModel:
    entry = MODELS.get(name)
    opts = entry.meta["options"].model_validate(options or {})
    problem = entry.meta["depth_rule"](depth, opts)
    if problem:
        raise WorkloadError(f"{name}: {problem}")
    model = entry.fn(depth, in_shape=in_shape, num_classes=num_classes, width=width, norm=norm, opts=opts)
    model.init_weights(init)
    return model


def check_depth(name: str, depth: int, options: dict | None = None) -> str | None:
    """None if the model can be built at this depth, else why not."""
    entry = MODELS.get(name)
    return entry.meta["depth_rule"](depth, entry.meta["options"].model_validate(options or {}))


# ---------------------------------------------------------------- resnet_v1
class ResNetOptions(Options):
    skip: Literal["short", "no_short"] = "short"
    shortcut: Literal["A", "B"] = "A"  # He et al. 2016: A = zero-padded identity, B = 1x1 projection


def _resnet_depth(depth: int, opts: ResNetOptions) -> str | None:
    if depth < 8 or (depth - 2) % 6:
        return f"resnet_v1 depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), got {depth}"
    return None


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: Norm, opts: ResNetOptions) -> None:
        super().__init__()
        self.c1 = conv_norm(cin, cout, norm, stride)
        self.c2 = conv_norm(cout, cout, norm)
        self.skip = opts.skip == "short"
        self.project: nn.Module | None = None
        self.pad = cout - cin
        self.stride = stride
        if self.skip and (stride != 1 or cin != cout) and opts.shortcut == "B":
            self.project = conv_norm(cin, cout, norm, stride, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c2(F.relu(self.c1(x)))
        if self.skip:
            if self.project is not None:
                out = out + self.project(x)
            elif self.stride != 1 or self.pad:
                sc = x[:, :, :: self.stride, :: self.stride]
                out = out + F.pad(sc, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            else:
                out = out + x
        return F.relu(out)


@MODELS.register("resnet_v1", options=ResNetOptions, depth_rule=_resnet_depth)
class ResNetV1(ElrModel):
    """CIFAR ResNet of He et al. 2016 (sec. 4.2): 3 stages of n blocks, widths w, 2w, 4w."""

    def __init__(self, depth: int, *, in_shape, num_classes, width, norm, opts: ResNetOptions) -> None:
        super().__init__()
        self.depth = depth
        n = (depth - 2) // 6
        self.stem = conv_norm(in_shape[0], width, norm)
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and i == 0 else 1, norm, opts))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------- plain_cnn
class PlainCnnOptions(Options):
    downsample: int = Field(0, ge=0, description="how many leading convolutions use stride 2")


def _plain_depth(depth: int, opts: PlainCnnOptions) -> str | None:
    if depth < 2:
        return f"plain_cnn depth must be >= 2 (convolutions + 1 linear head), got {depth}"
    if opts.downsample > depth - 1:
        return f"plain_cnn downsample={opts.downsample} exceeds its {depth - 1} convolutions"
    return None


@MODELS.register("plain_cnn", options=PlainCnnOptions, depth_rule=_plain_depth)
class PlainCnn(ElrModel):
    """depth-1 blocks of conv3x3 -> norm -> ReLU, then a linear head on the flattened maps.

    The head sees the whole (downsampled) map rather than a global average, so that even a shallow
    stack keeps the spatial layout that small digit images need.
    """

    def __init__(self, depth: int, *, in_shape, num_classes, width, norm, opts: PlainCnnOptions) -> None:
        super().__init__()
        self.depth = depth
        layers, cin = [], in_shape[0]
        h, w = in_shape[1], in_shape[2]
        for i in range(depth - 1):
            stride = 2 if i < opts.downsample else 1
            layers += [conv_norm(cin, width, norm, stride=stride), nn.ReLU()]
            cin, h, w = width, (h - 1) // stride + 1, (w - 1) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


# ---------------------------------------------------------------- bn_mlp
def _mlp_depth(depth: int, opts: Options) -> str | None:
    return None if depth >= 2 else f"bn_mlp depth must be >= 2 (hidden layers + 1 linear head), got {depth}"


@MODELS.register("bn_mlp", options=Options, depth_rule=_mlp_depth)
class BnMlp(ElrModel):
    """depth-1 blocks of linear -> norm -> ReLU on the flattened input, linear head."""

    def __init__(self, depth: int, *, in_shape, num_classes, width, norm, opts: Options) -> None:
        super().__init__()
        self.depth = depth
        layers, fin = [], math.prod(in_shape)
        for _ in range(depth - 1):
            layers += [linear_norm(fin, width, norm), nn.ReLU()]
            fin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(fin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.flatten(1)))

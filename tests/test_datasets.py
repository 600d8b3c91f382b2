from __future__ import annotations

import numpy as np
import pytest
import torch

from elrbench.workloads import DATASETS, DataError, load_dataset, random_crop_flip
from elrbench.workloads.datasets import check_data, data_options
from tests.conftest import write_cifar


def test_digits():
    d = load_dataset("digits")
    assert d.in_shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.x_train) + len(d.x_test) == 1797
    assert set(d.y_train.tolist()) == set(range(10))
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(1), atol=1e-4)
    assert torch.allclose(d.x_train.std(dim=(0, 2, 3)), torch.ones(1), atol=1e-3)


def test_digits_read_without_scikit_learn_are_scikit_learns():
    from sklearn.datasets import load_digits

    from elrbench.workloads.datasets import _split

    d = load_digits()
    ref = _split("digits", d.images[:, None].astype(np.float32), d.target, 10, data_options("digits", None))
    got = load_dataset("digits")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert getattr(got, k).dtype == getattr(ref, k).dtype and torch.equal(getattr(got, k), getattr(ref, k)), k


def test_mnist5k():
    d = load_dataset("mnist5k")
    assert d.in_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.x_train), len(d.x_test)) == (4000, 1000)
    # the shipped file is sorted by label: the split must have shuffled it
    assert len(set(d.y_test[:50].tolist())) > 5
    assert np.bincount(d.y_train.numpy()).min() > 300


def test_split_is_seeded():
    a = load_dataset("digits", {"split_seed": 3})
    b = load_dataset("digits", {"split_seed": 3, "max_train": 100000})
    c = load_dataset("digits", {"split_seed": 4})
    assert torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    assert len(load_dataset("digits", {"max_train": 100, "max_test": 50}).x_train) == 100


def test_synthetic():
    d = load_dataset("synthetic", {"shape": [3, 16, 16], "num_classes": 4, "n_train": 64, "n_test": 32})
    assert d.in_shape == (3, 16, 16) and d.num_classes == 4 and len(d.x_train) == 64 and len(d.x_test) == 32
    e = load_dataset("synthetic", {"shape": [3, 16, 16], "num_classes": 4, "n_train": 64, "n_test": 32})
    assert torch.equal(d.x_train, e.x_train)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_binary_folder_loads(tmp_path, name):
    write_cifar(tmp_path, name)
    d = load_dataset(name, {"dir": str(tmp_path)})
    n_files = 5 if name == "cifar10" else 1
    assert d.in_shape == (3, 32, 32) and len(d.x_train) == 20 * n_files and len(d.x_test) == 20
    assert d.num_classes == (10 if name == "cifar10" else 100) and d.augment
    # the folder itself is accepted as well as its parent
    sub = tmp_path / ("cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary")
    assert torch.equal(load_dataset(name, {"dir": str(sub)}).y_test, d.y_test)


def test_cifar_labels_and_pixels_are_read_right(tmp_path):
    sub = write_cifar(tmp_path)
    raw = np.fromfile(sub / "test_batch.bin", dtype=np.uint8).reshape(-1, 3073)
    d = load_dataset("cifar10", {"dir": str(tmp_path), "augment": False})
    assert d.y_test.tolist() == raw[:, 0].tolist()
    # normalization is affine per channel, so pixel order is preserved within the red plane of image 0
    red = raw[0, 1:1025].astype(np.float32)
    got = d.x_test[0, 0].flatten().numpy()
    assert np.corrcoef(red, got)[0, 1] > 0.999


@pytest.mark.parametrize("damage,needle", [
    (lambda s: (s / "data_batch_2.bin").unlink(), "missing .*data_batch_2.bin"),
    (lambda s: (s / "test_batch.bin").rename(s / "test.bin"), "missing .*test_batch.bin"),
    (lambda s: (s / "data_batch_1.bin").write_bytes(b"\0" * 3000), "data_batch_1.bin is 3000 bytes"),
    (lambda s: (s / "data_batch_4.bin").write_bytes(b""), "data_batch_4.bin is 0 bytes"),
])
def test_damaged_cifar_folders_are_refused(tmp_path, damage, needle):
    sub = write_cifar(tmp_path)
    damage(sub)
    opts = data_options("cifar10", {"dir": str(tmp_path)})
    assert check_data("cifar10", opts) is not None
    with pytest.raises(DataError, match=needle):
        load_dataset("cifar10", {"dir": str(tmp_path)})


def test_cifar100_files_given_as_cifar10_are_refused(tmp_path):
    # cifar-100 records are 3074 bytes: 20 of them are not a whole number of 3073-byte records
    sub = write_cifar(tmp_path, "cifar100")
    target = tmp_path / "fake" / "cifar-10-batches-bin"
    target.mkdir(parents=True)
    for i in range(1, 6):
        (target / f"data_batch_{i}.bin").write_bytes((sub / "train.bin").read_bytes())
    (target / "test_batch.bin").write_bytes((sub / "test.bin").read_bytes())
    with pytest.raises(DataError, match="whole number of 3073-byte records"):
        load_dataset("cifar10", {"dir": str(tmp_path / "fake")})


def test_random_crop_flip():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, g, pad=2)
    assert out.shape == x.shape
    # each output is a shifted, possibly mirrored window of its own padded image: its values are a
    # subset of that image's values plus zeros
    for i in range(2):
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist()) and len(vals) >= 16
    again = random_crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


def test_registry():
    assert DATASETS.names() == ["cifar10", "cifar100", "digits", "mnist5k", "synthetic"]

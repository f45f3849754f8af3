"""Tests for prunekit.data: shapes, dtypes, splits, determinism, argument checks, and the
torchvision loaders on tiny fake datasets written in their on-disk formats (offline)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit import data


def _cat(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_sizes():
    train, test = data.digits()
    x, y = _cat(train)
    xt, yt = _cat(test)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (1347, 1, 8, 8) and xt.shape == (450, 1, 8, 8)
    assert len(y) + len(yt) == 1797
    assert set(y.tolist()) == set(range(10)) and set(yt.tolist()) == set(range(10))
    xb, yb = next(iter(train))
    assert xb.shape == (64, 1, 8, 8) and yb.shape == (64,)


def test_digits_flatten_and_standardisation():
    x, _, xt, _ = data.digits_tensors(flatten=True)
    assert x.shape == (1347, 64) and xt.shape == (450, 64)
    # standardised with the *training* split's statistics
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-3
    raw, _, raw_t, _ = data.digits_tensors(standardize=False)
    assert float(raw.min()) == 0.0 and float(raw.max()) == 1.0
    mean, std = raw.mean(), raw.std(unbiased=False)
    torch.testing.assert_close(xt.view_as(raw_t), (raw_t - mean) / std, atol=1e-4, rtol=1e-4)


def test_digits_split_is_stratified():
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=10)
    for frac in (0.2, 0.25, 0.5):
        _, y, _, yt = data.digits_tensors(test_fraction=frac)
        test_counts = np.bincount(yt.numpy(), minlength=10)
        assert np.all(np.abs(test_counts - frac * counts) <= 1.0)
        assert np.array_equal(test_counts + np.bincount(y.numpy(), minlength=10), counts)


def test_digits_deterministic_and_seed_dependent():
    a = data.digits_tensors(seed=3)
    b = data.digits_tensors(seed=3)
    c = data.digits_tensors(seed=4)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[1], c[1])
    # same seed -> same shuffled batches
    xa, ya = next(iter(data.digits(seed=3)[0]))
    xb, yb = next(iter(data.digits(seed=3)[0]))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_loader_shuffles_each_epoch_and_test_loader_does_not():
    train, test = data.digits(batch_size=2000)
    (_, y1), (_, y2) = next(iter(train)), next(iter(train))
    assert not torch.equal(y1, y2) and torch.equal(y1.sort().values, y2.sort().values)
    _, _, _, yt = data.digits_tensors()
    assert torch.equal(_cat(test)[1], yt)


def test_tensors_are_copies():
    x, *_ = data.digits_tensors()
    x.zero_()
    assert data.digits_tensors()[0].abs().sum() > 0
    s, *_ = data.shapes_tensors(20, 10)
    s.zero_()
    assert data.shapes_tensors(20, 10)[0].abs().sum() > 0


def _rows(x, y):
    """The (image, label) pairs of a split as a multiset (a Counter of byte strings)."""
    from collections import Counter

    return Counter(xi.numpy().tobytes() + bytes([int(yi)]) for xi, yi in zip(x, y))


def test_digits_validation_split_is_carved_out_of_the_test_split():
    x, y, xt, yt = data.digits_tensors()
    xa, ya, xv, yv, xs, ys = data.digits_tensors(validation=0.5)
    # the training split does not change: the zoo models never saw a validation image
    assert torch.equal(xa, x) and torch.equal(ya, y)
    assert (len(yv), len(ys)) == (225, 225)
    # validation and test partition the old test split: as multisets of (image, label)
    # their sum is exactly it, so no example is in both (and none is lost or added)
    assert _rows(xv, yv) + _rows(xs, ys) == _rows(xt, yt)
    # both keep the old test split's order (a subsequence of it)
    pos = {xi.numpy().tobytes(): i for i, xi in enumerate(xt)}
    for part in (xv, xs):
        idx = [pos[xi.numpy().tobytes()] for xi in part]
        assert idx == sorted(idx)


@pytest.mark.parametrize("frac", [0.2, 0.5, 0.7])
def test_digits_validation_split_is_stratified_with_the_asked_size(frac):
    *_, yt = data.digits_tensors()
    _, _, _, yv, _, ys = data.digits_tensors(validation=frac)
    assert len(yv) == round(frac * len(yt)) and len(yv) + len(ys) == len(yt)
    old = np.bincount(yt.numpy(), minlength=10)
    val = np.bincount(yv.numpy(), minlength=10)
    assert np.all(np.abs(val - frac * old) <= 1.0)
    assert np.array_equal(val + np.bincount(ys.numpy(), minlength=10), old)


def test_digits_validation_loaders_are_deterministic_and_default_unchanged():
    two = data.digits()
    three = data.digits(validation=0.5)
    assert len(two) == 2 and len(three) == 3
    # the default call still returns (train_loader, test_loader) over the same tensors
    assert torch.equal(two[1].dataset.tensors[0], data.digits_tensors()[2])
    assert torch.equal(two[0].dataset.tensors[0], three[0].dataset.tensors[0])
    # same seed -> same split and same batches; another seed -> another split
    again = data.digits(validation=0.5)
    for a, b in zip(three, again):
        assert all(torch.equal(u, v) for u, v in zip(a.dataset.tensors, b.dataset.tensors))
    xa, ya = next(iter(three[0]))
    xb, yb = next(iter(again[0]))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = data.digits_tensors(seed=1, validation=0.5)
    assert not torch.equal(other[3], data.digits_tensors(seed=0, validation=0.5)[3])
    # the validation loader does not shuffle, and flatten applies to every split
    assert torch.equal(_cat(three[1])[1], three[1].dataset.tensors[1])
    flat = data.digits_tensors(flatten=True, validation=0.5)
    assert [t.shape[1:] for t in flat[::2]] == [(64,), (64,), (64,)]


# --------------------------------------------------------------------------- shapes


def test_shapes_defaults():
    train, test = data.shapes()
    x, y = _cat(train)
    xt, yt = _cat(test)
    assert x.shape == (5000, 3, 32, 32) and xt.shape == (1000, 3, 32, 32)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 500))
    assert torch.equal(torch.bincount(yt, minlength=10), torch.full((10,), 100))
    assert len(data.SHAPES_CLASSES) == 10 == len(set(data.SHAPES_CLASSES))
    assert next(iter(train))[0].shape == (128, 3, 32, 32)


def test_shapes_generation_is_deterministic():
    a = data.shapes_tensors(5000, 1000, seed=12345)  # a seed no other test uses: not cached
    data._render_shapes.cache_clear()
    b = data.shapes_tensors(5000, 1000, seed=12345)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    c = data.shapes_tensors(5000, 1000, seed=12346)
    assert not torch.equal(a[0], c[0])
    # the test split does not depend on the training split's size and vice versa
    d = data.shapes_tensors(100, 1000, seed=12345)
    e = data.shapes_tensors(5000, 50, seed=12345)
    assert torch.equal(d[2], a[2]) and torch.equal(e[0], a[0])
    assert not torch.equal(a[0][:1000], a[2])


def test_shapes_images_are_not_trivial():
    x, y, _, _ = data.shapes_tensors(200, 10, seed=1)
    # every image has a visible shape (two colours) plus noise: pixel spread well above noise
    per_image_std = x.flatten(1).std(dim=1)
    assert float(per_image_std.min()) > 0.08
    # colours vary: the mean colour of a class is not a constant across its images
    for c in range(10):
        assert float(x[y == c].mean(dim=(2, 3)).std(dim=0).min()) > 0.05
    # no duplicate images
    assert len(torch.unique(x.flatten(1), dim=0)) == 200


@settings(max_examples=15, deadline=None)
@given(
    n_train=st.integers(1, 60),
    n_test=st.integers(1, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_shapes_property_balance_and_range(n_train, n_test, seed):
    x, y, xt, yt = data.shapes_tensors(n_train, n_test, seed)
    assert x.shape == (n_train, 3, 32, 32) and xt.shape == (n_test, 3, 32, 32)
    for labels, n in ((y, n_train), (yt, n_test)):
        counts = torch.bincount(labels, minlength=10)
        assert len(counts) == 10
        assert int(counts.sum()) == n
        assert int(counts.max()) - int(counts.min()) <= 1  # as balanced as n allows
    assert float(x.min()) >= 0 and float(x.max()) <= 1


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "call, exc, name",
    [
        (lambda: data.digits(batch_size=0), ValueError, "batch_size"),
        (lambda: data.digits(batch_size=-5), ValueError, "batch_size"),
        (lambda: data.digits(batch_size=2.0), TypeError, "batch_size"),
        (lambda: data.digits(test_fraction=0.0), ValueError, "test_fraction"),
        (lambda: data.digits(test_fraction=1.0), ValueError, "test_fraction"),
        (lambda: data.digits(test_fraction="0.2"), TypeError, "test_fraction"),
        (lambda: data.digits(seed=1.5), TypeError, "seed"),
        (lambda: data.digits(seed=-1), ValueError, "seed"),
        (lambda: data.digits(seed=True), TypeError, "seed"),
        (lambda: data.digits(flatten="yes"), TypeError, "flatten"),
        (lambda: data.digits(validation=0.0), ValueError, "validation"),
        (lambda: data.digits(validation=1.0), ValueError, "validation"),
        (lambda: data.digits(validation="0.5"), TypeError, "validation"),
        (lambda: data.digits_tensors(validation=True), TypeError, "validation"),
        (lambda: data.shapes(n_train=0), ValueError, "n_train"),
        (lambda: data.shapes(n_test=-1), ValueError, "n_test"),
        (lambda: data.shapes(batch_size=0), ValueError, "batch_size"),
        (lambda: data.shapes(seed="0"), TypeError, "seed"),
        (lambda: data.mnist(".", download="no"), TypeError, "download"),
        (lambda: data.mnist(None), TypeError, "root"),
        (lambda: data.cifar10(".", batch_size=0), ValueError, "batch_size"),
        (lambda: data.cifar10(".", n_train=0), ValueError, "n_train"),
    ],
)
def test_bad_arguments_name_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


# --------------------------------------------------------------------------- torchvision


def test_missing_torchvision_data_says_pass_download(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.cifar10(tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # nothing was downloaded


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format MNIST uses (magic 0x0000080N, big endian)."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files(tmp_path: Path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {"train": 30, "t10k": 12}
    arrays = {}
    for prefix, n in splits.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[prefix] = (images, labels)

    train, test = data.mnist(tmp_path, batch_size=8)
    x, y = _cat(train)
    xt, yt = _cat(test)
    assert x.shape == (30, 1, 28, 28) and xt.shape == (12, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    images, labels = arrays["t10k"]
    assert torch.equal(yt, torch.from_numpy(labels.astype(np.int64)))  # test order kept
    expected = (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(xt[:, 0], expected)
    assert sorted(y.tolist()) == sorted(arrays["train"][1].tolist())

    train, test = data.mnist(tmp_path, n_train=10, n_test=5, flatten=True, batch_size=4)
    x, _ = _cat(train)
    xt, _ = _cat(test)
    assert x.shape == (10, 784) and xt.shape == (5, 784)


def test_cifar10_reads_pickle_batches(tmp_path: Path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    per_batch = 4
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        n = per_batch if name != "test_batch" else 6
        # each image has constant channels: R = 10*b, G = 100, B = 200 + index (row-major CHW)
        img = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        img[:, 0] = 10 * b
        img[:, 1] = 100
        img[:, 2] = (200 + np.arange(n))[:, None, None]
        labels = [(b + i) % 10 for i in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": img.reshape(n, -1), "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, f)
    # torchvision checks the real files' MD5 sums; our fake files obviously differ
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())

    train, test = data.cifar10(tmp_path, batch_size=5)
    x, y = _cat(train)
    xt, yt = _cat(test)
    assert x.shape == (20, 3, 32, 32) and xt.shape == (6, 3, 32, 32)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert yt.tolist() == [(5 + i) % 10 for i in range(6)]
    mean = torch.tensor([0.4914, 0.4822, 0.4465])
    std = torch.tensor([0.2470, 0.2435, 0.2616])
    raw = xt * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    torch.testing.assert_close(raw[:, 0], torch.full((6, 32, 32), 50 / 255))
    torch.testing.assert_close(raw[:, 1], torch.full((6, 32, 32), 100 / 255))
    torch.testing.assert_close(raw[:, 2, 0, 0], (200 + torch.arange(6.0)) / 255)
    x, _ = _cat(data.cifar10(tmp_path, n_train=7, batch_size=3)[0])
    assert x.shape == (7, 3, 32, 32)

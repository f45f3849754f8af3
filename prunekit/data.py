"""Offline-first datasets for the book.

Every function returns ``(train_loader, test_loader)``: two
:class:`torch.utils.data.DataLoader` objects that yield ``(inputs, targets)`` batches with
``inputs`` float32 and ``targets`` int64 class indices. The training loader shuffles with its
own seeded :class:`torch.Generator`; the test loader does not shuffle.

* :func:`digits` -- scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).
  With ``validation=f`` it returns ``(train_loader, validation_loader, test_loader)``: the
  fraction ``f`` of the test split becomes a *validation split* (stratified, seeded), for
  choices a method makes by looking at accuracy; the training split is unchanged, so the
  zoo models, trained on all of it, have never seen a validation image.
* :func:`shapes` -- a procedurally generated, seeded 32x32 RGB image set with 10 classes of
  shapes and textures: a CIFAR-like stand-in that needs no download and that a small CNN learns
  in seconds.
* :func:`mnist`, :func:`cifar10` -- the torchvision datasets, for readers who are online. They
  never download unless ``download=True`` is passed.

References: Alpaydin & Kaynak, *Optical Recognition of Handwritten Digits* (UCI, 1998);
LeCun et al., *Gradient-based learning applied to document recognition* (1998, MNIST);
Krizhevsky, *Learning Multiple Layers of Features from Tiny Images* (2009, CIFAR-10).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ._validate import check_int, check_number

__all__ = [
    "SHAPES_CLASSES",
    "DIGITS_CLASSES",
    "MNIST_CLASSES",
    "CIFAR10_CLASSES",
    "digits",
    "digits_tensors",
    "shapes",
    "shapes_tensors",
    "mnist",
    "cifar10",
    "make_loaders",
]

Loaders = tuple[DataLoader, DataLoader]

DIGITS_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
MNIST_CLASSES: tuple[str, ...] = DIGITS_CLASSES
SHAPES_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal stripes",
    "vertical stripes",
    "diagonal stripes",
    "checkerboard",
    "dot grid",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Channel statistics commonly used to normalise the torchvision datasets.
_MNIST_MEAN, _MNIST_STD = 0.1307, 0.3081
_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` if it is an int >= ``minimum``; else raise naming ``name``."""
    return check_int(name, value, minimum)


def _check_optional_int(name: str, value: Any, minimum: int) -> int | None:
    return None if value is None else _check_int(name, value, minimum)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_optional_fraction(name: str, value: Any) -> float | None:
    return None if value is None else _check_fraction(name, value)


def _check_fraction(name: str, value: Any) -> float:
    """``value`` as a float in the open interval (0, 1)."""
    return check_number(name, value, low=0.0, high=1.0, low_open=True, high_open=True)


# --------------------------------------------------------------------------- loaders


def make_loaders(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    batch_size: int,
    seed: int = 0,
) -> Loaders:
    """Wrap tensors in ``(train_loader, test_loader)``.

    The training loader shuffles with a :class:`torch.Generator` seeded with ``seed``, so two
    loaders built with the same seed yield the same batches in the same order.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True, generator=generator
    )
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=batch_size, shuffle=False)
    return train_loader, test_loader


def _split_validation(
    x: torch.Tensor, y: torch.Tensor, validation: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_val, y_val, x_test, y_test)``: the fraction ``validation`` of ``(x, y)``, stratified
    by label and seeded, and the rest; both parts keep the order of ``(x, y)``."""
    from sklearn.model_selection import train_test_split

    idx_val, idx_test = train_test_split(
        np.arange(len(y)), train_size=validation, random_state=seed, stratify=y.numpy()
    )
    idx_val, idx_test = torch.from_numpy(np.sort(idx_val)), torch.from_numpy(np.sort(idx_test))
    return x[idx_val], y[idx_val], x[idx_test], y[idx_test]


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=8)
def _digits_cached(
    test_fraction: float, seed: int, standardize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # [1797, 8, 8] in [0, 1]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    if standardize:
        mean, std = float(x_tr.mean()), float(x_tr.std())
        x_tr = (x_tr - mean) / std
        x_te = (x_te - mean) / std
    return (
        torch.from_numpy(np.ascontiguousarray(x_tr, dtype=np.float32)).unsqueeze(1),
        torch.from_numpy(y_tr),
        torch.from_numpy(np.ascontiguousarray(x_te, dtype=np.float32)).unsqueeze(1),
        torch.from_numpy(y_te),
    )


def digits_tensors(
    test_fraction: float = 0.25,
    seed: int = 0,
    flatten: bool = False,
    standardize: bool = True,
    validation: float | None = None,
) -> tuple[torch.Tensor, ...]:
    """Return ``(x_train, y_train, x_test, y_test)`` for scikit-learn's 8x8 digits.

    Pixels are divided by 16 (to [0, 1]); with ``standardize=True`` (default) they are then
    shifted and scaled by the *training split's* scalar mean and standard deviation, so the
    test split is transformed with training statistics only. The split is stratified
    (``sklearn.model_selection.train_test_split(..., stratify=labels)``) and seeded.
    Images have shape ``[N, 1, 8, 8]``, or ``[N, 64]`` with ``flatten=True``.

    With ``validation`` (a fraction in (0, 1)), return six tensors ``(x_train, y_train,
    x_val, y_val, x_test, y_test)``: the test split above is divided once more, stratified
    and seeded with ``seed``, into a validation split (the fraction ``validation`` of it) and
    a smaller test split. The two are disjoint, together they are exactly the test split of
    ``validation=None``, and the training split does not change.
    """
    test_fraction = _check_fraction("test_fraction", test_fraction)
    seed = _check_int("seed", seed, 0)
    flatten = _check_bool("flatten", flatten)
    standardize = _check_bool("standardize", standardize)
    validation = _check_optional_fraction("validation", validation)
    x_tr, y_tr, x_te, y_te = (t.clone() for t in _digits_cached(test_fraction, seed, standardize))
    if flatten:
        x_tr, x_te = x_tr.flatten(1), x_te.flatten(1)
    if validation is None:
        return x_tr, y_tr, x_te, y_te
    return (x_tr, y_tr, *_split_validation(x_te, y_te, validation, seed))


def digits(
    batch_size: int = 64,
    test_fraction: float = 0.25,
    seed: int = 0,
    flatten: bool = False,
    standardize: bool = True,
    validation: float | None = None,
) -> tuple[DataLoader, ...]:
    """Loaders for scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    No download: the data ships with scikit-learn. See :func:`digits_tensors` for the
    preprocessing. With the defaults, the training split has 1347 images and the test split 450,
    and the result is ``(train_loader, test_loader)``.

    ``validation=f`` returns ``(train_loader, validation_loader, test_loader)`` instead: the
    fraction ``f`` of those 450 test images becomes a validation split (stratified by class,
    seeded with ``seed``), the rest stays the test split; the training split is the same
    1347 images. Use the validation split for every choice made by looking at accuracy
    (a search's reward, a hyperparameter) and report the test split only. With
    ``validation=0.5``: 1347 / 225 / 225 images. The validation loader does not shuffle.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    tensors = digits_tensors(test_fraction, seed, flatten, standardize, validation)
    if validation is None:
        return make_loaders(*tensors, batch_size=batch_size, seed=seed)
    x_tr, y_tr, x_val, y_val, x_te, y_te = tensors
    train_loader, test_loader = make_loaders(x_tr, y_tr, x_te, y_te, batch_size=batch_size, seed=seed)
    validation_loader = DataLoader(
        TensorDataset(x_val, y_val), batch_size=batch_size, shuffle=False
    )
    return train_loader, validation_loader, test_loader


# --------------------------------------------------------------------------- shapes

_SIZE = 32


def _shape_masks(label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean foreground masks ``[n, 32, 32]`` for ``n`` images of class ``label``."""
    yy, xx = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float32)
    col = lambda a: a.astype(np.float32)[:, None, None]  # noqa: E731  (per-image parameter)
    cx = col(rng.uniform(10.0, 22.0, n))
    cy = col(rng.uniform(10.0, 22.0, n))
    dx, dy = xx - cx, yy - cy
    if label <= 4:  # geometric shapes
        r = col(rng.uniform(6.0, 11.0, n))
        if label == 0:  # filled circle
            return dx * dx + dy * dy <= r * r
        if label == 1:  # filled axis-aligned square
            half = 0.85 * r
            return (np.abs(dx) <= half) & (np.abs(dy) <= half)
        if label == 2:  # filled triangle, apex up
            return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= 0.6 * (dy + r))
        if label == 3:  # plus-shaped cross
            w = np.maximum(1.5, r / 3.5)
            return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
        d2 = dx * dx + dy * dy  # ring
        inner = 0.55 * r
        return (d2 <= r * r) & (d2 >= inner * inner)
    # textures inside a square patch
    half = col(rng.uniform(7.0, 12.0, n))
    patch = (np.abs(dx) <= half) & (np.abs(dy) <= half)
    period = col(rng.integers(4, 7, n))
    phase = col(rng.integers(0, 6, n))
    if label == 5:  # horizontal stripes
        tex = np.mod(yy + phase, period) < period / 2
    elif label == 6:  # vertical stripes
        tex = np.mod(xx + phase, period) < period / 2
    elif label == 7:  # diagonal stripes, either direction
        sign = col(rng.choice(np.array([-1.0, 1.0]), n))
        tex = np.mod(xx + sign * yy + phase + 64, period) < period / 2
    elif label == 8:  # checkerboard with cells of 2 or 3 pixels
        cell = col(rng.integers(2, 4, n))
        tex = np.mod(np.floor((xx + phase) / cell) + np.floor((yy + phase) / cell), 2) == 0
    else:  # dot grid
        ox = np.mod(xx + phase, period) - (period - 1) / 2
        oy = np.mod(yy + phase, period) - (period - 1) / 2
        tex = ox * ox + oy * oy <= (0.32 * period) ** 2
    return patch & tex


@functools.lru_cache(maxsize=4)  # 5000 images take 61 MB: keep the cache modest
def _render_shapes(n: int, seed: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``n`` images from the random stream ``(seed, stream)``; cached."""
    rng = np.random.default_rng([seed, stream])
    labels = rng.permutation(np.arange(n) % len(SHAPES_CLASSES)).astype(np.int64)
    masks = np.zeros((n, _SIZE, _SIZE), dtype=bool)
    for label in range(len(SHAPES_CLASSES)):
        idx = np.flatnonzero(labels == label)
        if idx.size:
            masks[idx] = _shape_masks(label, idx.size, rng)
    background = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    foreground = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    # keep enough contrast: too-similar colours get the foreground shifted by half a turn
    low = np.abs(foreground - background).mean(axis=1) < 0.3
    foreground[low] = np.mod(background[low] + 0.5, 1.0)
    m = masks[:, None, :, :].astype(np.float32)
    images = background[:, :, None, None] + m * (foreground - background)[:, :, None, None]
    images += rng.normal(0.0, 0.08, images.shape).astype(np.float32)
    np.clip(images, 0.0, 1.0, out=images)
    return torch.from_numpy(images), torch.from_numpy(labels)


def shapes_tensors(
    n_train: int = 5000, n_test: int = 1000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(x_train, y_train, x_test, y_test)`` of the procedural shapes set.

    Images are float32 ``[N, 3, 32, 32]`` in [0, 1] (not normalised, so they can be shown with
    ``plt.imshow(x.permute(1, 2, 0))``); labels are int64 in ``0..9`` (names in
    :data:`SHAPES_CLASSES`). Each split is exactly class-balanced when its size is a multiple
    of 10. Every image has a random background and foreground colour (with a minimum
    contrast), position, size, stripe period/phase and Gaussian pixel noise (sigma 0.08).
    The training and test splits come from two independent random streams derived from
    ``seed``, so changing ``n_test`` does not change the training images. Results are cached
    in memory (copies are returned).
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    seed = _check_int("seed", seed, 0)
    x_tr, y_tr = _render_shapes(n_train, seed, 0)
    x_te, y_te = _render_shapes(n_test, seed, 1)
    return x_tr.clone(), y_tr.clone(), x_te.clone(), y_te.clone()


def shapes(
    n_train: int = 5000, n_test: int = 1000, batch_size: int = 128, seed: int = 0
) -> Loaders:
    """Loaders for the procedural 32x32 RGB shapes set (10 classes, no download).

    A CIFAR-like stand-in: same image size and number of classes, but generated from ``seed``
    in about a second, so the book runs offline. See :func:`shapes_tensors`.
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    return make_loaders(*shapes_tensors(n_train, n_test, seed), batch_size=batch_size, seed=seed)


# --------------------------------------------------------------------------- torchvision


def _subset(
    x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``n`` examples (all of them when ``n`` is None)."""
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    idx, _ = idx.sort()
    return x[idx], y[idx]


def _torchvision_dataset(cls_name: str, root: str | os.PathLike, train: bool, download: bool):
    try:
        import torchvision.datasets as tvd
    except ImportError as err:  # pragma: no cover - torchvision is an optional dependency
        raise ImportError(
            f"{cls_name} needs torchvision: pip install torchvision (or prunekit[vision])"
        ) from err
    cls = getattr(tvd, cls_name)
    try:
        return cls(root=os.fspath(root), train=train, download=download)
    except RuntimeError as err:
        if download:
            raise
        raise FileNotFoundError(
            f"{cls_name} was not found under root={os.fspath(root)!r} and download=False. "
            f"Pass download=True to download it (needs internet), or point root= at a folder "
            f"that already holds it. ({err})"
        ) from err


def _check_common(root: Any, download: Any, batch_size: Any, seed: Any) -> None:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike folder, got {root!r}")
    _check_bool("download", download)
    _check_int("batch_size", batch_size, 1)
    _check_int("seed", seed, 0)


def mnist(
    root: str | os.PathLike,
    download: bool = False,
    batch_size: int = 128,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    flatten: bool = False,
) -> Loaders:
    """Loaders for MNIST (60k/10k 28x28 greyscale digits) via :mod:`torchvision`.

    Nothing is downloaded unless ``download=True``; if the files are missing a
    :class:`FileNotFoundError` says so. Images are ``[N, 1, 28, 28]`` (``[N, 784]`` with
    ``flatten=True``), scaled to [0, 1] and normalised with the usual mean 0.1307 and std
    0.3081. ``n_train``/``n_test`` take a seeded random subset to keep CPU runs short.
    """
    _check_common(root, download, batch_size, seed)
    n_train = _check_optional_int("n_train", n_train, 1)
    n_test = _check_optional_int("n_test", n_test, 1)
    flatten = _check_bool("flatten", flatten)
    out = []
    for train, n in ((True, n_train), (False, n_test)):
        ds = _torchvision_dataset("MNIST", root, train, download)
        x = (ds.data.to(torch.float32).div(255.0).sub(_MNIST_MEAN).div(_MNIST_STD)).unsqueeze(1)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        x, y = _subset(x, y, n, seed)
        out += [x.flatten(1) if flatten else x, y]
    return make_loaders(*out, batch_size=batch_size, seed=seed)


def cifar10(
    root: str | os.PathLike,
    download: bool = False,
    batch_size: int = 128,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Loaders:
    """Loaders for CIFAR-10 (50k/10k 32x32 RGB images, 10 classes) via :mod:`torchvision`.

    Nothing is downloaded unless ``download=True`` (about 170 MB); if the files are missing a
    :class:`FileNotFoundError` says so. Images are ``[N, 3, 32, 32]``, scaled to [0, 1] and
    normalised per channel with the usual CIFAR-10 statistics. No augmentation.
    ``n_train``/``n_test`` take a seeded random subset to keep CPU runs short.
    """
    _check_common(root, download, batch_size, seed)
    n_train = _check_optional_int("n_train", n_train, 1)
    n_test = _check_optional_int("n_test", n_test, 1)
    mean = torch.tensor(_CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_CIFAR_STD).view(1, 3, 1, 1)
    out = []
    for train, n in ((True, n_train), (False, n_test)):
        ds = _torchvision_dataset("CIFAR10", root, train, download)
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
        x = (x.to(torch.float32).div(255.0) - mean) / std
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
        x, y = _subset(x.contiguous(), y, n, seed)
        out += [x, y]
    return make_loaders(*out, batch_size=batch_size, seed=seed)

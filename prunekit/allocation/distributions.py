"""Layer-wise density distributions: uniform, Erdős–Rényi (ER) and Erdős–Rényi-kernel (ERK).

A distribution turns one overall density (the fraction of weights kept) into one density per
layer, before any score is computed: sparse training starts from it (SET: Mocanu et al. 2018;
RigL: Evci et al. 2020), and random pruning with ER/ERK ratios is a strong baseline (Liu et al.
2022, "The unreasonable effectiveness of random sparse training").

* Mocanu, Mocanu, Stone, Nguyen, Gibescu & Liotta, "Scalable training of artificial neural
  networks with adaptive sparse connectivity inspired by network science", Nature
  Communications 2018 -- ER: a layer with n_in inputs and n_out outputs keeps a fraction
  ε (n_in + n_out) / (n_in · n_out) of its connections.
* Evci, Gale, Menick, Castro & Elsen, "Rigging the lottery: making all tickets winners",
  ICML 2020 -- ERK: the same with the kernel dimensions, (Σ dims) / (Π dims); the reference
  implementation is ``get_sparsities_erdos_renyi`` in ``rigl/sparse_utils.py``
  (google-research/rigl), which :func:`erk` follows.
* Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang & Mocanu, "The unreasonable
  effectiveness of random sparse training", ICLR 2022.

Use the result with :func:`prunekit.make_masks` through :func:`to_sparsity`
(``make_masks(scores, sparsity=to_sparsity(erk(shapes, 0.1)), scope="layer")``); a per-layer
dict needs ``scope="layer"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real

import torch

from .._validate import check_number

__all__ = ["erk", "uniform", "to_sparsity"]

Shape = Sequence[int]


def _check_shapes(shapes: object, min_dims: int) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` with positive int dims (a tensor stands for its shape)."""
    if not isinstance(shapes, Mapping):
        raise TypeError(f"shapes must be a mapping {{name: shape}}, got {type(shapes).__name__}")
    if not shapes:
        raise ValueError("shapes must name at least one parameter, got an empty mapping")
    out: dict[str, tuple[int, ...]] = {}
    for name, shape in shapes.items():
        if not isinstance(name, str):
            raise TypeError(f"shapes: names must be str, got {name!r}")
        if isinstance(shape, torch.Tensor):
            shape = tuple(shape.shape)
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
                isinstance(d, Integral) and not isinstance(d, bool) for d in shape):
            raise TypeError(f"shapes[{name!r}] must be a sequence of ints (or a tensor), got {shape!r}")
        if len(shape) < min_dims or any(d < 1 for d in shape):
            need = "at least 2 dims (out, in, ...)" if min_dims == 2 else "at least 1 dim"
            raise ValueError(f"shapes[{name!r}] must have {need}, all >= 1, got {tuple(shape)}")
        out[name] = tuple(int(d) for d in shape)
    return out


def _check_density(density: object) -> float:
    return check_number("density", density, low=0.0, high=1.0, low_open=True,
                        what="a number in (0, 1] (the fraction of weights kept)")


def _check_dense(dense: object, names: Iterable[str]) -> set[str]:
    if isinstance(dense, str):
        dense = (dense,)
    if not isinstance(dense, Iterable):
        raise TypeError(f"dense must be an iterable of parameter names, got {dense!r}")
    dense = list(dense)
    if not all(isinstance(n, str) for n in dense):
        raise TypeError(f"dense must hold parameter names (str), got {dense!r}")
    unknown = sorted(set(dense) - set(names))
    if unknown:
        raise ValueError(f"dense names {unknown}, which are not in shapes; shapes has {list(names)[:8]}")
    return set(dense)


def erk(shapes: Mapping[str, Shape | torch.Tensor], density: float, *, kernel: bool = True,
        power_scale: float = 1.0, dense: Iterable[str] = ()) -> dict[str, float]:
    """Per-layer densities with the Erdős–Rényi(-kernel) rule of RigL (Evci et al. 2020).

    Each layer gets density d_l = ε · p_l with the raw probability

    * ERK (``kernel=True``): p_l = (Σ_i dims_i / Π_i dims_i) ** ``power_scale``, all dims of the
      PyTorch shape (a conv ``[out, in, kh, kw]``: (out + in + kh + kw) / (out · in · kh · kw));
    * ER (``kernel=False``): p_l = ((out + in) / (out · in)) ** ``power_scale``, from
      ``shape[0]`` and ``shape[1]`` only (PyTorch layout; RigL's TensorFlow kernels are
      ``[kh, kw, in, out]``, hence its ``shape[-2:]``).

    ε is solved so that Σ_l d_l · n_l = ``density`` · Σ_l n_l (n_l = numel). A layer whose
    d_l would exceed 1 is made dense (d_l = 1) and ε is solved again for the rest, repeatedly;
    as in the reference, each pass makes dense every layer that shares the largest p_l.
    Layers named in ``dense`` are dense from the start and count inside the budget (the
    reference's ``dense_layers``), so the other layers get less.

    Differences from ``rigl/sparse_utils.py``: the budget is exactly ``density · n_l`` per layer
    (the reference rounds each layer's zeros down, ``floor(n_l · sparsity)``), so the identity
    above holds to rounding error; and ``power_scale`` applies to ER too (the reference uses it
    for ERK only; the default 1.0 agrees). ER needs two dims (a bias has no fan-in and
    fan-out) and refuses a 1-D shape; ERK takes it, with p = 1 (Σ dims = Π dims), so a bias
    is usually made dense -- pass only the weights you mean to prune.

    Returns:
        ``{name: density}`` in the order of ``shapes``, every value in (0, 1].

    Raises:
        TypeError / ValueError (naming the argument): a bad ``shapes``, ``density`` outside
        (0, 1], a negative or non-finite ``power_scale``, ``dense`` naming unknown layers or
        layers that take the whole budget.

    >>> d = erk({"a": (4, 2), "b": (2, 8)}, 0.5)   # p = 6/8, 10/16; eps = 12 / 16
    >>> d
    {'a': 0.5625, 'b': 0.46875}
    >>> d["a"] * 8 + d["b"] * 16 == 0.5 * 24
    True
    """
    if not isinstance(kernel, bool):
        raise TypeError(f"kernel must be a bool (True: ERK, False: ER), got {kernel!r}")
    shp = _check_shapes(shapes, 1 if kernel else 2)
    d = _check_density(density)
    if isinstance(power_scale, bool) or not isinstance(power_scale, Real):
        raise TypeError(f"power_scale must be a number >= 0, got {power_scale!r}")
    power = float(power_scale)
    if not (math.isfinite(power) and power >= 0):
        raise ValueError(f"power_scale must be a finite number >= 0, got {power_scale!r}")
    dense_set = _check_dense(dense, shp)

    numel = {n: math.prod(s) for n, s in shp.items()}
    budget = d * math.fsum(numel.values())
    if d == 1.0:
        return {n: 1.0 for n in shp}
    if dense_set and math.fsum(numel[n] for n in dense_set) >= budget:
        raise ValueError(f"dense layers {sorted(dense_set)} hold {sum(numel[n] for n in dense_set)} weights, "
                         f"at least the whole budget density * total = {budget:g}: nothing is left for the others")

    def raw(s: tuple[int, ...]) -> float:
        dims = s if kernel else s[:2]
        return (math.fsum(dims) / math.prod(dims)) ** power

    p = {n: raw(s) for n, s in shp.items()}
    full = set(dense_set)
    while True:
        sparse = [n for n in shp if n not in full]
        if not sparse:  # only reachable by rounding at a density of almost 1
            return {n: 1.0 for n in shp}
        rest = budget - math.fsum(numel[n] for n in full)
        eps = rest / math.fsum(p[n] * numel[n] for n in sparse)
        top = max(p[n] for n in sparse)
        if eps * top <= 1.0:
            break
        full.update(n for n in sparse if p[n] == top)
    return {n: 1.0 if n in full else eps * p[n] for n in shp}


def uniform(shapes: Mapping[str, Shape | torch.Tensor], density: float) -> dict[str, float]:
    """Every layer keeps the same fraction ``density`` (the uniform distribution).

    >>> uniform({"a": (4, 2), "b": (3,)}, 0.25)
    {'a': 0.25, 'b': 0.25}
    """
    shp = _check_shapes(shapes, 1)
    d = _check_density(density)
    return {n: d for n in shp}


def to_sparsity(densities: Mapping[str, float]) -> dict[str, float]:
    """``{name: 1 - density}``: the per-layer ``sparsity`` dict that :func:`prunekit.make_masks`
    (``scope="layer"``) and :func:`prunekit.prune` take. A density of exactly 0 would give a
    sparsity of 1, which ``make_masks`` refuses.

    >>> to_sparsity({"a": 0.25, "b": 1.0})
    {'a': 0.75, 'b': 0.0}
    """
    if not isinstance(densities, Mapping):
        raise TypeError(f"densities must be a mapping {{name: density}}, got {type(densities).__name__}")
    out = {}
    for n, v in densities.items():
        if isinstance(v, bool) or not isinstance(v, Real) or not 0.0 <= float(v) <= 1.0:
            raise ValueError(f"densities[{n!r}] must be a number in [0, 1], got {v!r}")
        out[n] = 1.0 - float(v)
    return out

"""Random pruning at initialisation with uniform, ER or ERK layer-wise ratios.

Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang & Mocanu, "The unreasonable
effectiveness of random sparse training", ICLR 2022: a random mask trained from scratch is a
strong baseline for pruning at initialisation once its layer-wise densities are well chosen
(ER/ERK: Mocanu et al. 2018; Evci et al. 2020), and it closes the gap to dense training as the
network grows. Which weights go within a layer is random; only the per-layer counts are
chosen, by :mod:`prunekit.allocation.distributions`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ...allocation.distributions import erk, to_sparsity, uniform
from ...criteria import score
from ...pipeline import prune

__all__ = ["prune_random", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("erk", "er", "uniform")


def prune_random(model: nn.Module, density: float, *, distribution: str = "erk", seed: int = 0,
                 dense: Iterable[str] = (), power_scale: float = 1.0,
                 include: Iterable[str] | str | None = None,
                 exclude: Iterable[str] | str | None = None) -> dict[str, torch.Tensor]:
    """Mask ``model`` at random, keeping ``density`` of the chosen weights overall; returns the masks.

    Each chosen parameter ``l`` keeps a fraction d_l given by ``distribution`` --
    ``"erk"`` / ``"er"`` (:func:`prunekit.allocation.distributions.erk` with ``kernel=True`` /
    ``False``; ``dense`` and ``power_scale`` as there) or ``"uniform"`` -- and exactly
    ``round((1 - d_l) · n_l)`` of its weights, drawn by the ``"random"`` criterion with
    ``seed``, are masked (:func:`prunekit.prune` with ``scope="layer"``), so the kept count
    is within half a weight per layer of Σ d_l · n_l = ``density`` · Σ n_l. ``include``/
    ``exclude`` choose the parameters as in :func:`prunekit.prune` (by default the weights
    of the prunable layers). ER needs 2-D or larger weights.

    Raises:
        TypeError / ValueError naming the argument, before the model is touched.

    >>> import torch.nn as nn, prunekit as pk
    >>> model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
    >>> masks = prune_random(model, 0.25)
    >>> {n: round(float(m.float().mean()), 3) for n, m in masks.items()}   # ERK: the thin layer keeps more
    {'0.weight': 0.169, '2.weight': 0.574}
    """
    if not isinstance(distribution, str) or distribution.lower() not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    kind = distribution.lower()
    shapes = {n: tuple(s.shape) for n, s in score(model, "magnitude", include=include, exclude=exclude).items()}
    if kind == "uniform":
        if isinstance(dense, str) or (isinstance(dense, Iterable) and list(dense)):
            raise ValueError("dense is only used by distribution='erk' or 'er'")
        densities = uniform(shapes, density)
    else:
        densities = erk(shapes, density, kernel=kind == "erk", power_scale=power_scale, dense=dense)
    return prune(model, to_sparsity(densities), criterion="random", scope="layer",
                 include=include, exclude=exclude, seed=seed)

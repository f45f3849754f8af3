"""Iterative SynFlow: prune at initialisation without data (Tanaka et al. 2020).

Tanaka, Kunin, Yamins & Ganguli, *Pruning neural networks without any data by iteratively
conserving synaptic flow* (NeurIPS 2020). The score is the criterion ``"synflow"``
(:mod:`prunekit.criteria.synflow`); this module holds the procedure that prunes with it in
``iterations`` rounds, the ingredient that avoids layer collapse.
"""

from __future__ import annotations

import torch
from torch import nn

from ..._validate import check_int, check_model
from ...allocation import check_scope, check_sparsity
from ...core.masks import apply_masks, get_masks
from ...core.targets import find_targets
from ...criteria import score
from ...criteria.synflow import synflow_input
from ...pipeline import make_masks

__all__ = ["prune_synflow"]


def prune_synflow(model: nn.Module, sparsity: float, iterations: int = 100,
                  example_inputs: torch.Tensor | None = None, *, include=None, exclude=None,
                  scope: str = "global") -> dict[str, torch.Tensor]:
    """Iterative SynFlow, in place: ``iterations`` rounds of score -> mask, reaching ``sparsity``.

    Round k (1..n) prunes to sparsity ``s_k = 1 - (1 - sparsity)**(k/n)`` (the exponential
    schedule of Tanaka et al. 2020, Algorithm 1), re-scoring the already-masked model each
    time. Unstructured and global as in the paper (``scope="layer"`` is allowed for
    comparisons). Masks are applied with :func:`prunekit.apply_masks`, which never un-prunes:
    weights masked before the call (or in an earlier round) stay masked.

    Returns the masks now applied to the model, for the chosen targets (``{name: bool
    tensor}``, True = kept), as :func:`prunekit.prune` does. ``sparsity=0`` runs no round and
    applies all-True masks, so the targets are masked with what they had (nothing, or their
    earlier masks) and those masks are returned. Raises ``ValueError``/``TypeError`` for bad
    arguments before the model is touched.

    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> masks = prune_synflow(net, 0.5, iterations=5)
    >>> sum(int((~m).sum()) for m in masks.values())
    24
    """
    check_model(model)
    s = check_sparsity(sparsity)
    n = check_int("iterations", iterations, 1)
    check_scope(scope)
    targets = find_targets(model, include=include, exclude=exclude)
    x = synflow_input(model, example_inputs)  # validate before touching the model
    if s == 0.0:
        apply_masks(model, {t.name: torch.ones(t.shape, dtype=torch.bool, device=t.parameter.device)
                            for t in targets})
    for k in range(1, n + 1) if s > 0 else ():
        s_k = 1.0 - (1.0 - s) ** (k / n)
        scores = score(model, "synflow", include=include, exclude=exclude, example_inputs=x)
        for t in targets:
            if t.is_masked:
                scores[t.name] = scores[t.name].masked_fill(~t.mask, float("-inf"))
        apply_masks(model, make_masks(scores, s_k, granularity="unstructured", scope=scope))
    masks = get_masks(model)
    return {t.name: masks[t.name] for t in targets}

"""The one-call path: score, make masks, apply them."""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from .allocation import allocate, check_scope, check_sparsity
from .criteria import get as get_criterion
from .criteria import score
from .granularity import check_granularity
from .masks import apply_masks
from .targets import find_targets


def make_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float],
    granularity: str = "unstructured",
    scope: str = "global",
) -> dict[str, torch.Tensor]:
    """Turn scores into bool keep-masks (True = kept) that remove ``sparsity`` of the weights.

    ``scope="global"`` ranks all scores together; ``scope="layer"`` ranks each tensor on
    its own. Exactly ``round(sparsity * n)`` entries are removed (see
    :mod:`prunekit.allocation` for the tie rule).

    >>> import torch
    >>> m = make_masks({"w": torch.tensor([3., 1., 2., 4.])}, sparsity=0.5)
    >>> m["w"].tolist()
    [True, False, False, True]
    """
    check_granularity(granularity)
    return allocate(scores, sparsity, scope)


def prune(
    model: nn.Module,
    sparsity: float | Mapping[str, float],
    criterion: str = "magnitude",
    granularity: str = "unstructured",
    scope: str = "global",
    data: Iterable | None = None,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    **criterion_kwargs,
) -> dict[str, torch.Tensor]:
    """Score ``model`` with ``criterion``, mask ``sparsity`` of its weights, apply; returns the masks.

    ``sparsity`` is the *total* fraction pruned in the chosen parameters, counting what
    earlier calls already pruned: weights pruned before are ranked lowest, so calling
    ``prune(m, 0.5)`` then ``prune(m, 0.75)`` leaves exactly 75% pruned (it never
    un-prunes). This differs from ``torch.nn.utils.prune``, whose ``amount`` is a fraction
    of the weights still remaining.

    Every argument is validated before the model is touched.
    """
    if not isinstance(sparsity, Mapping):
        check_sparsity(sparsity)
    check_granularity(granularity)
    check_scope(scope)
    get_criterion(criterion)
    targets = find_targets(model, include=include, exclude=exclude)
    scores = score(model, criterion, data, include=include, exclude=exclude, **criterion_kwargs)
    for t in targets:
        if t.is_masked:
            s = scores[t.name].to(torch.float32 if not scores[t.name].is_floating_point() else scores[t.name].dtype)
            scores[t.name] = s.masked_fill(~t.mask, float("-inf"))
    masks = make_masks(scores, sparsity, granularity, scope)
    apply_masks(model, masks)
    return masks

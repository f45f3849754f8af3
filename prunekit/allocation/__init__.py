"""Allocation: how a sparsity budget is split over layers.

* ``scope="layer"`` — every tensor loses the same fraction (or its own fraction when
  ``sparsity`` is a ``{name: fraction}`` dict): the "uniform" allocation.
* ``scope="global"`` — one threshold over all tensors (Han et al. 2015; Frankle &
  Carbin 2019): layers with small scores lose more.

Exact counts and the tie rule
-----------------------------
Pruning ``s`` of ``n`` scores removes exactly ``round(s * n)`` of them (Python's
``round``, i.e. half to even, as :mod:`torch.nn.utils.prune` does) -- except that the
rounding never takes a whole pool (below). The lowest scores go first; among equal
scores, the one that comes first is pruned first: first by the order of the ``scores``
dict (the model's parameter order), then by flat (row-major) index inside a tensor.
The result equals a *stable* ascending sort of the scores.

The same rule applies to the *units* of coarser granularities (channels, blocks):
:func:`allocate` ranks one score per unit exactly as it ranks weights.

Never everything
----------------
``sparsity < 1`` means "not everything", but ``round(s * n)`` reaches ``n`` as soon as
``s >= 1 - 1/(2n)`` (0.999 of 192 weights rounds to 192). So at most ``n - 1`` units of
a pool go: in ``scope="layer"`` the pool is each tensor, so **every tensor keeps at least
one unit** (its best, the one a stable ascending sort puts last) and the count is
``min(round(s * n), n - 1)``; in ``scope="global"`` the pool is all tensors together,
the count is ``min(round(s * N), N - 1)`` -- the ranking itself may still empty a
tensor whose scores are all low (*layer collapse*, as with
``torch.nn.utils.prune.global_unstructured``; ``min_keep`` prevents it).

At least one channel per layer
------------------------------
Channel pruning never removes every channel of a layer (that would disconnect the
network and leave nothing to rebuild): :func:`allocate` takes ``min_keep=1`` and
spares each tensor's best unit, also in global scope:
``min(round(s * N), N - L)`` over ``N`` channels in ``L`` layers, and a layer that
would lose all its channels keeps its best one while the next-lowest channel of
another layer goes instead.

Validation
----------
:func:`allocate` is the public entry point and checks its arguments (with the checks of
:mod:`prunekit._validate`); :func:`allocate_units` is what :func:`prunekit.make_masks`
calls with the arguments of a validated :class:`~prunekit._validate.MaskRequest`, and
checks nothing again.
"""

from __future__ import annotations

from typing import Mapping

import torch

from .._validate import SCOPES, check_scope, check_scores, check_sparsity, resolve_sparsity
from ..granularity.pattern import pattern_kernel_count  # noqa: F401  (its home before 0.2)

from . import distributions
from .distributions import erk, to_sparsity, uniform

__all__ = ["allocate", "allocate_units", "prune_lowest", "SCOPES", "check_scope", "check_scores", "check_sparsity",
           "resolve_sparsity", "distributions", "erk", "uniform", "to_sparsity"]


def prune_lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask over ``flat`` (1-D) that is False on exactly the ``k`` lowest entries.

    Ties go to the earlier index (stable order). Runs in O(n) with ``kthvalue`` instead
    of sorting or ``topk``.
    """
    n = flat.numel()
    keep = torch.ones(n, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return keep
    if k >= n:
        return keep.zero_()
    thr = torch.kthvalue(flat, k).values
    below = flat < thr
    keep &= ~below
    need = k - int(below.sum())
    ties = torch.nonzero(flat == thr).squeeze(1)[:need]
    keep[ties] = False
    return keep


def _flat(s: torch.Tensor) -> torch.Tensor:
    s = s.detach().reshape(-1)
    return s if s.is_floating_point() else s.double()


def _protect_best(flat: torch.Tensor, min_keep: int) -> torch.Tensor:
    """Bool mask of the ``min_keep`` entries a stable ascending sort puts last."""
    protected = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if min_keep > 0:
        order = torch.sort(flat, stable=True).indices
        protected[order[-min_keep:]] = True
    return protected


def allocate(scores: Mapping[str, torch.Tensor], sparsity: float | Mapping[str, float],
             scope: str = "global", min_keep: int = 0) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) with the requested sparsity, per ``scope``.

    ``scores`` holds one score per unit (a weight, a channel, a tile), any shape.
    ``sparsity`` may be a ``{name: fraction}`` dict with ``scope="layer"``. At most
    ``n - 1`` units of a pool go: every tensor keeps a unit in layer scope, the whole
    set does in global scope. With ``min_keep`` every tensor keeps at least that many of
    its units (its best ones), in either scope (see the module docstring).
    """
    scores = check_scores(scores)
    scope = check_scope(scope)
    return allocate_units(scores, resolve_sparsity(list(scores), sparsity, scope), scope, min_keep)


def allocate_units(scores: Mapping[str, torch.Tensor], per: Mapping[str, float], scope: str,
                   min_keep: int = 0) -> dict[str, torch.Tensor]:
    """:func:`allocate` on validated arguments: ``per`` holds one fraction per name of
    ``scores`` (in global scope the first one is used), ``scope`` is canonical."""
    if scope == "layer":
        out = {}
        for n, t in scores.items():
            k = min(round(per[n] * t.numel()), t.numel() - max(1, min(min_keep, t.numel())))
            out[n] = prune_lowest(_flat(t), k).view(t.shape)
        return out

    flats = [_flat(t) for t in scores.values()]
    dtype = torch.promote_types(flats[0].dtype, torch.float32)
    for f in flats[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    flat = torch.cat([f.to(dtype) for f in flats])
    k = min(round(per[next(iter(scores))] * flat.numel()), flat.numel() - 1)
    if min_keep > 0:
        protected = torch.cat([_protect_best(f, min(min_keep, f.numel())) for f in flats])
        free = ~protected
        keep = torch.ones_like(protected)
        keep[free] = prune_lowest(flat[free], min(k, int(free.sum())))
    else:
        keep = prune_lowest(flat, k)
    out, start = {}, 0
    for n, t in scores.items():
        out[n] = keep[start:start + t.numel()].view(t.shape)
        start += t.numel()
    return out

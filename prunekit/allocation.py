"""Allocation: how a sparsity budget is split over layers.

* ``scope="layer"`` — every tensor loses the same fraction (or its own fraction when
  ``sparsity`` is a ``{name: fraction}`` dict): the "uniform" allocation.
* ``scope="global"`` — one threshold over all tensors (Han et al. 2015; Frankle &
  Carbin 2019): layers with small scores lose more.

Exact counts and the tie rule
-----------------------------
Pruning ``s`` of ``n`` scores removes exactly ``round(s * n)`` of them (Python's
``round``, i.e. half to even, as :mod:`torch.nn.utils.prune` does). The lowest scores
go first; among equal scores, the one that comes first is pruned first: first by the
order of the ``scores`` dict (the model's parameter order), then by flat (row-major)
index inside a tensor. The result equals a *stable* ascending sort of the scores.

The same rule applies to the *units* of coarser granularities (channels, blocks):
:func:`allocate` ranks one score per unit exactly as it ranks weights.

At least one channel per layer
------------------------------
Channel pruning never removes every channel of a layer (that would disconnect the
network and leave nothing to rebuild): :func:`allocate` takes ``min_keep=1`` and
spares each tensor's best unit, the one a stable ascending sort puts last. In layer
scope the count is ``min(round(s * n), n - 1)``; in global scope
``min(round(s * N), N - L)`` over ``N`` channels in ``L`` layers, and a layer that
would lose all its channels keeps its best one while the next-lowest channel of
another layer goes instead.

Kernel patterns
---------------
:func:`pattern_kernel_count` gives the number of whole kernels that connectivity
pruning removes so that a layer's sparsity is as close as possible to the target.
"""

from __future__ import annotations

from fractions import Fraction

import math
from numbers import Real
from typing import Mapping

import torch

SCOPES = ("global", "layer")


def check_sparsity(sparsity: object, arg: str = "sparsity") -> float:
    """A fraction of weights to remove, in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real):
        raise TypeError(f"{arg} must be a number in [0, 1), got {type(sparsity).__name__}")
    s = float(sparsity)
    if not (0.0 <= s < 1.0) or math.isnan(s):
        raise ValueError(f"{arg} must be in [0, 1) (the fraction of weights removed), got {sparsity!r}")
    return s


def check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    return scope  # type: ignore[return-value]


def check_scores(scores: object) -> dict[str, torch.Tensor]:
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a dict {{param_name: tensor}}, got {type(scores).__name__}")
    if not scores:
        raise ValueError("scores is empty: nothing to prune")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"scores[{name!r}] must be a torch.Tensor, got {type(s).__name__}")
        if s.is_complex() or s.dtype == torch.bool:
            raise TypeError(f"scores[{name!r}] must be a real-valued tensor, got dtype {s.dtype}")
        if s.numel() == 0:
            raise ValueError(f"scores[{name!r}] is empty")
        if s.is_floating_point() and torch.isnan(s).any():
            raise ValueError(f"scores[{name!r}] contains NaN")
    return dict(scores)


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


def resolve_sparsity(names: list[str], sparsity: object, scope: str) -> dict[str, float]:
    """One validated fraction per name: the same number for all, or a ``{name: fraction}`` dict.

    A dict needs ``scope="layer"`` and must name exactly ``names``.
    """
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError("a per-layer sparsity dict needs scope='layer'")
        missing = set(names) - set(sparsity)
        extra = set(sparsity) - set(names)
        if missing or extra:
            raise ValueError(f"sparsity dict must name exactly the scored parameters; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return {n: check_sparsity(sparsity[n], f"sparsity[{n!r}]") for n in names}
    s = check_sparsity(sparsity)
    return {n: s for n in names}


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
    ``sparsity`` may be a ``{name: fraction}`` dict with ``scope="layer"``. With
    ``min_keep`` every tensor keeps at least that many of its units (its best ones),
    which caps the count removed (see the module docstring).
    """
    scores = check_scores(scores)
    scope = check_scope(scope)
    per = resolve_sparsity(list(scores), sparsity, scope)

    if scope == "layer":
        out = {}
        for n, t in scores.items():
            k = min(round(per[n] * t.numel()), t.numel() - min(min_keep, t.numel()))
            out[n] = prune_lowest(_flat(t), k).view(t.shape)
        return out

    flats = [_flat(t) for t in scores.values()]
    dtype = torch.promote_types(flats[0].dtype, torch.float32)
    for f in flats[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    flat = torch.cat([f.to(dtype) for f in flats])
    k = round(per[next(iter(scores))] * flat.numel())
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


def pattern_kernel_count(n_kernels: int, sparsity: float, area: int = 9, kept: int = 4) -> int:
    """Kernels to remove whole so that a pattern-pruned layer's sparsity is closest to ``sparsity``.

    Pattern pruning keeps ``kept`` of every ``area`` weights; removing ``k`` of ``K``
    kernels gives sparsity ``(K*(area-kept) + k*kept) / (K*area)``, linear in ``k``, so
    the closest count is ``round(K * (area*s - (area-kept)) / kept)`` clipped to
    ``[0, K]``. It is computed exactly (with :class:`fractions.Fraction`), and an exact tie
    between two counts goes to the even one (Python's ``round``), so the count never
    depends on floating-point rounding.

    >>> pattern_kernel_count(8, 5 / 9), pattern_kernel_count(8, 0.8), pattern_kernel_count(8, 0.75)
    (0, 4, 4)
    """
    k = round(n_kernels * (area * Fraction(sparsity) - (area - kept)) / kept)
    return max(0, min(n_kernels, k))

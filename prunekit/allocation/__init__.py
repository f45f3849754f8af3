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

Kernel patterns
---------------
:func:`pattern_kernel_count` gives the number of whole kernels that connectivity
pruning removes so that a layer's sparsity is as close as possible to the target.
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real
from typing import Mapping

import torch

SCOPES = ("global", "layer")


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit int stays readable)."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def check_sparsity(sparsity: object, arg: str = "sparsity") -> float:
    """A fraction of weights to remove, in [0, 1): ``TypeError`` for a non-number (bools,
    strings, complex numbers, tensors), ``ValueError`` for NaN, infinities and any value
    outside [0, 1) (also one too large for a float)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real):
        raise TypeError(f"{arg} must be a number in [0, 1) (the fraction of weights removed), "
                        f"got {_short(sparsity)} of type {type(sparsity).__name__}")
    try:
        s = float(sparsity)
    except (OverflowError, ValueError):
        s = math.nan
    if not 0.0 <= s < 1.0:  # also NaN
        raise ValueError(f"{arg} must be in [0, 1) (the fraction of weights removed), got {_short(sparsity)}")
    return s


def check_scope(scope: object) -> str:
    """``"global"`` or ``"layer"``, case-insensitive like criterion and granularity names."""
    if not isinstance(scope, str):
        raise TypeError(f"scope must be one of {list(SCOPES)} (a string), got {type(scope).__name__}")
    key = scope.strip().lower()
    if key not in SCOPES:
        raise ValueError(f"scope must be one of {list(SCOPES)} (case-insensitive), got {scope!r}")
    return key


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
        if s.is_meta:
            raise ValueError(f"scores[{name!r}] is on the meta device and has no values (was the model built "
                             f"on the meta device? load its weights first)")
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
        bad = [k for k in sparsity if not isinstance(k, str)]
        if bad:
            raise TypeError(f"sparsity dict keys must be parameter names (strings), got {_short(bad[0])}")
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
    ``sparsity`` may be a ``{name: fraction}`` dict with ``scope="layer"``. At most
    ``n - 1`` units of a pool go: every tensor keeps a unit in layer scope, the whole
    set does in global scope. With ``min_keep`` every tensor keeps at least that many of
    its units (its best ones), in either scope (see the module docstring).
    """
    scores = check_scores(scores)
    scope = check_scope(scope)
    per = resolve_sparsity(list(scores), sparsity, scope)

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

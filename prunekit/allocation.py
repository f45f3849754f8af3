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
"""

from __future__ import annotations

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


def allocate(scores: Mapping[str, torch.Tensor], sparsity: float | Mapping[str, float],
             scope: str = "global") -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) with the requested sparsity, per ``scope``.

    ``sparsity`` may be a ``{name: fraction}`` dict with ``scope="layer"``.
    """
    scores = check_scores(scores)
    scope = check_scope(scope)
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError("a per-layer sparsity dict needs scope='layer'")
        missing = set(scores) - set(sparsity)
        extra = set(sparsity) - set(scores)
        if missing or extra:
            raise ValueError(f"sparsity dict must name exactly the scored parameters; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        per = {n: check_sparsity(sparsity[n], f"sparsity[{n!r}]") for n in scores}
    else:
        s = check_sparsity(sparsity)
        per = {n: s for n in scores}

    if scope == "layer":
        return {n: prune_lowest(_flat(t), round(per[n] * t.numel())).view(t.shape) for n, t in scores.items()}

    flats = [_flat(t) for t in scores.values()]
    dtype = torch.promote_types(flats[0].dtype, torch.float32)
    for f in flats[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    flat = torch.cat([f.to(dtype) for f in flats])
    keep = prune_lowest(flat, round(per[next(iter(scores))] * flat.numel()))
    out, start = {}, 0
    for n, t in scores.items():
        out[n] = keep[start:start + t.numel()].view(t.shape)
        start += t.numel()
    return out

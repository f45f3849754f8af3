"""The one-call path: score, make masks, apply them -- composition only.

:func:`make_masks` composes the granularity axis (:mod:`prunekit.granularity`: which
weights form a unit, one score per unit) with the allocation axis
(:mod:`prunekit.allocation`: which units go, exact counts, the tie rule):
parse -> validate once into a :class:`~prunekit._validate.MaskRequest` -> units ->
allocate -> expand. :func:`prune` adds the criterion and applies the masks; every
argument is checked before the criterion runs.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ._validate import MaskRequest, check_coupled, check_materialised, check_scores, mask_request
from .allocation import allocate_units
from .core.masks import apply_masks, check_maskable
from .core.targets import all_parameters, find_targets
from .criteria import get as get_criterion
from .criteria import score
from .granularity import parse

__all__ = ["make_masks", "prune", "register_coupled"]

#: The coupled-channel path of :func:`prune`. :mod:`prunekit.structured.groups` sits above
#: this module (it traces the model) and registers its ``prune_groups`` here on import, so
#: the pipeline never imports the structural side.
_COUPLED: list[Callable[..., dict]] = []


def register_coupled(fn: Callable[..., dict]) -> Callable[..., dict]:
    """Make ``fn(model, sparsity, example_inputs, criterion, scope, data, **kwargs)`` the
    coupled-channel path of :func:`prune` (``prunekit.prune_groups`` is)."""
    _COUPLED[:] = [fn]
    return fn


def _shapes(scores: Mapping[str, torch.Tensor], shapes: object,
           model: nn.Module | None) -> tuple[dict[str, tuple[int, ...]] | None, nn.Module | None]:
    """The parameter shapes of the scored names (``None``: the scores' own shapes) and the
    model, from ``make_masks``' ``shapes=`` and ``model=`` (``shapes=model`` is deprecated)."""
    if isinstance(shapes, nn.Module):
        warnings.warn("make_masks(shapes=model) is deprecated: pass model=model", DeprecationWarning, stacklevel=3)
        model, shapes = shapes if model is None else model, None
    if model is not None:
        check_materialised(model, allow_meta=True)  # a meta model has shapes, a lazy one has not
        if shapes is None:
            shapes = {n: t.shape for n, t in all_parameters(model).items()}
    if shapes is None:
        return None, model
    if not isinstance(shapes, Mapping):
        raise TypeError(f"shapes must be a dict {{param_name: shape}} or None, got {type(shapes).__name__}")
    missing = [n for n in scores if n not in shapes]
    if missing:
        raise ValueError(f"shapes has no entry for scored parameters {missing}")
    return {n: tuple(int(d) for d in shapes[n]) for n in scores}, model


def _masks(scores: Mapping[str, torch.Tensor], req: MaskRequest) -> dict[str, torch.Tensor]:
    """Masks for validated scores and request: units -> allocate -> expand."""
    g = req.granularity
    if not g.allocates:
        return g.local_masks(scores, req)
    units = g.units(scores, req)
    keep = allocate_units(units, g.allocation_sparsity(units, req), req.scope, min_keep=g.min_keep)
    return g.expand(keep, req, scores)


def make_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float] | None = None,
    granularity: str = "unstructured",
    scope: str = "global",
    *,
    reduction: str | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    model: nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Turn scores into bool keep-masks (True = kept, parameter-shaped) that remove ``sparsity`` of the units.

    * ``granularity`` -- what is removed together (see :mod:`prunekit.granularity`):
      ``"unstructured"``, ``"channel"``, ``"N:M"`` such as ``"2:4"``,
      ``"block:RxC"`` such as ``"block:4x4"``, ``"pattern"`` (3 x 3 convs),
      ``"head"`` (attention heads), ``"layer"`` (skippable residual blocks). Heads and
      layers are found in the model, so they need ``model=``; their masks cover every
      parameter of a removed unit, also parameters that were not scored, and ignore
      scored parameters outside any unit.
    * ``sparsity`` -- the fraction of units removed: weights, channels, tiles, heads or
      blocks. Exactly ``round(sparsity * n)`` units go, per tensor (``scope="layer"``) or
      over all tensors (``scope="global"``); see :mod:`prunekit.allocation` for the tie
      rule and the at-least-one-channel rule. N:M fixes it at ``1 - N/M`` (pass ``None``
      or that value). For ``"pattern"`` it is the weight sparsity of every layer, at
      least 5/9 (``None`` = 5/9); above that whole kernels go too. A number, or
      (``scope="layer"``) a ``{name: fraction}`` dict naming exactly the scored
      parameters (for heads: the attention modules); ``TypeError``/``ValueError``
      otherwise.

      **Never everything.** A sparsity below 1 never removes a whole pool, even where
      ``round(sparsity * n)`` reaches ``n``: in layer scope every tensor keeps at least
      one unit, so at most ``n - 1`` of its ``n`` units go; in global scope at most
      ``N - 1`` of all ``N`` units go, and every tensor keeps a channel (``"channel"``)
      or a head (``"head"``), while with weights and tiles the global ranking may empty
      a tensor whose scores are all low (*layer collapse*, exactly as
      ``torch.nn.utils.prune.global_unstructured``; use ``scope="layer"`` to prevent it).
      ``"layer"`` keeps at least one block.
    * ``scope`` -- ``"global"`` ranks all tensors together, ``"layer"`` each on its own
      (case-insensitive) -- for heads: each attention module on its own. N:M and
      pattern are local by construction: ``scope`` is validated and ignored.
      ``"layer"`` granularity supports ``"global"`` only. In global scope unit scores
      reduced from weight scores are normalised by the unit size (l2 -> RMS, l1 -> mean
      ``|s|``, sum -> mean) so that layers with a different fan-in compete fairly.
    * ``reduction`` -- how weight scores become one unit score: ``"l1"``, ``"l2"``,
      ``"sum"``, ``"mean"``; ``None`` = the granularity's default (``"l2"`` for
      channels, blocks, heads and layers, the norm ``torch.nn.utils.prune.ln_structured(n=2)``
      uses; ``"sum"`` for patterns). Ignored by unstructured and N:M.
    * ``shapes`` -- ``{name: parameter shape}``; ``model`` -- the model (its parameter
      shapes, and the heads or blocks). Without either, every score is taken to have
      its parameter's shape; channel-level scores (shape ``[out]``) need one of them, so
      that the masks get the parameter's full shape (a 1-D score under ``"channel"``
      without them is a ``ValueError``). ``shapes=model`` still works, with a
      ``DeprecationWarning``.

    Every argument is checked once, before any mask is computed.

    >>> import torch
    >>> m = make_masks({"w": torch.tensor([[3., 1.], [2., 4.]])}, sparsity=0.5)
    >>> m["w"].tolist()
    [[True, False], [False, True]]
    >>> make_masks({"w": torch.tensor([[3., 1., 2., 4.]])}, granularity="2:4")["w"].tolist()
    [[True, False, False, True]]
    """
    g = parse(granularity)
    scores = check_scores(scores)
    shapes_, model = _shapes(scores, shapes, model)
    g.check_score_shapes(scores, shapes_)
    req = mask_request(g, sparsity, scope, reduction, shapes_ or {n: s.shape for n, s in scores.items()}, model)
    return _masks(scores, req)


def _mark_removed(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores of weights (or whole channels) that ``mask`` removed become ``-inf``."""
    s = score if score.is_floating_point() else score.to(torch.float32)
    if s.shape == mask.shape:
        return s.masked_fill(~mask, float("-inf"))
    if s.dim() == 1 and mask.dim() >= 1 and s.shape[0] == mask.shape[0]:  # channel-level score
        gone = ~mask.reshape(mask.shape[0], -1).any(dim=1)
        return s.masked_fill(gone, float("-inf"))
    return s  # a mismatched shape is reported by the level check


def prune(
    model: nn.Module,
    sparsity: float | Mapping[str, float] | None = None,
    criterion: str = "magnitude",
    granularity: str = "unstructured",
    scope: str = "global",
    data: Iterable | None = None,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    reduction: str | None = None,
    example_inputs: torch.Tensor | tuple | None = None,
    coupled: bool | None = None,
    **criterion_kwargs,
) -> dict[str, torch.Tensor]:
    """Score ``model`` with ``criterion``, mask ``sparsity`` of its weights, apply; returns the masks.

    ``sparsity`` is the *total* fraction pruned in the chosen parameters, counting what
    earlier calls already pruned: weights (and, for ``granularity="channel"``, whole
    channels) pruned before are ranked lowest, so calling ``prune(m, 0.5)`` then
    ``prune(m, 0.75)`` leaves exactly 75% pruned. It never un-prunes: the returned and
    applied mask is the new mask AND the old one, for every granularity. This differs
    from ``torch.nn.utils.prune``, whose ``amount`` is a fraction of the weights still
    remaining. ``granularity``, ``scope`` and ``reduction`` are as in :func:`make_masks`.

    **Coupled channels** (``coupled``). With ``coupled=True`` (``granularity="channel"``
    and ``example_inputs``, a batch the model accepts) channels are pruned *per group of
    coupled channels* -- layers whose outputs are added by a residual connection, or
    share a BatchNorm or a depthwise conv, lose the same channels, chosen by the sum of
    their scores -- through :func:`prunekit.prune_groups`; this is the path to use
    before :func:`prunekit.compact`, which can only remove a channel that every layer of
    its group dropped. With ``coupled=False`` every layer is pruned on its own, which in
    a residual network removes fewer channels than asked once compacted. The default
    ``coupled=None`` means: coupled exactly when ``granularity="channel"`` and
    ``example_inputs`` is given. ``example_inputs`` is also passed to criteria that run
    a forward pass (SynFlow); otherwise it is not used.

    Every argument is validated once, before the criterion runs (no forward or backward
    pass is wasted on a call that is bound to fail) and before the model is touched: the
    model must be materialised (no lazy or meta parameters), the criterion's score level
    must suit the granularity (a channel-level criterion such as ``"fpgm"`` serves
    ``"channel"`` only), and everything :func:`make_masks` checks is checked on the
    pruned parameters' shapes. A sparsity dict names the pruned parameters (``include``/
    ``exclude`` chosen); entries of parameters the criterion leaves out are ignored.
    """
    g = parse(granularity)
    crit = get_criterion(criterion)
    check_materialised(model)
    if check_coupled(g, coupled, example_inputs):
        if isinstance(sparsity, Mapping):
            raise ValueError("prune: a per-parameter sparsity dict cannot be used with granularity='channel' and "
                             "example_inputs (coupled layers share one sparsity); pass a float or omit example_inputs")
        if not _COUPLED:  # pragma: no cover - prunekit/__init__ imports prunekit.structured.groups
            raise RuntimeError("the coupled-channel path is not registered: import prunekit.structured.groups")
        return _COUPLED[0](model, sparsity, example_inputs, criterion, scope, data, include=include,
                            exclude=exclude, reduction=reduction, **criterion_kwargs)
    if example_inputs is not None and crit.needs_inputs:
        criterion_kwargs["example_inputs"] = example_inputs
    targets = find_targets(model, include=include, exclude=exclude)
    for t in targets:  # a module's own weight_orig/weight_mask: refuse before scoring
        check_maskable(t)
    g.check_criterion_level(crit.name, crit.level)
    req = mask_request(g, sparsity, scope, reduction, {t.name: t.shape for t in targets}, model)
    scores = check_scores(score(model, criterion, data, include=include, exclude=exclude, **criterion_kwargs))
    g.check_score_shapes(scores, req.shapes)
    old = {t.name: t.mask for t in targets if t.is_masked and t.name in scores}
    for name, mask in old.items():
        scores[name] = _mark_removed(scores[name], mask)
    masks = _masks(scores, req)
    masks = {n: m & old[n] if n in old else m for n, m in masks.items()}
    apply_masks(model, masks)
    return masks

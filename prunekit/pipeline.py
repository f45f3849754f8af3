"""The one-call path: score, make masks, apply them.

:func:`make_masks` composes the granularity axis (:mod:`prunekit.granularity`: which
weights form a unit, one score per unit) with the allocation axis
(:mod:`prunekit.allocation`: which units go, exact counts, the tie rule).
:func:`prune` adds the criterion and applies the masks.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import granularity as gran
from ._validate import check_materialised
from .allocation import allocate, check_scope, check_scores, check_sparsity, pattern_kernel_count, resolve_sparsity
from .allocation import prune_lowest
from .structured.heads import head_masks
from .criteria import get as get_criterion
from .criteria import score
from .granularity import Spec, check_applicable, check_reduction, parse_granularity, score_level
from .structured.groups import prune_groups
from .structured.layers import layer_masks
from .core.masks import apply_masks, check_maskable
from .core.targets import all_parameters, find_targets

_TOL = 1e-9


def _check_fixed_sparsity(spec: Spec, sparsity: object) -> None:
    """Validate a sparsity against what N:M and pattern pruning can reach (numbers only)."""
    if spec.kind == "nm":
        if sparsity is None:
            return
        s = check_sparsity(sparsity)
        fixed = 1 - spec.n / spec.m
        if abs(s - fixed) > _TOL:
            raise ValueError(f"granularity {spec.name!r} fixes the sparsity at 1 - N/M = {fixed:g}, but sparsity="
                             f"{sparsity!r}; pass sparsity=None or {fixed:g}")
    elif spec.kind == "pattern":
        if sparsity is None:
            return
        s = check_sparsity(sparsity)
        if s < gran.PATTERN_MIN_SPARSITY - _TOL:
            raise ValueError(f"granularity 'pattern' keeps 4 of the 9 weights of every kernel, so sparsity must be "
                             f"at least 5/9 = {gran.PATTERN_MIN_SPARSITY:.4f} (higher values also remove whole "
                             f"kernels), got sparsity={sparsity!r}")
    else:
        check_sparsity(sparsity)


def _per_param_sparsity(spec: Spec, names: list[str], sparsity: object, scope: str) -> dict[str, float]:
    """Every parameter's target sparsity, validated for ``spec``."""
    if spec.kind == "nm" and sparsity is None:
        return {n: 1 - spec.n / spec.m for n in names}
    if spec.kind == "pattern" and sparsity is None:
        return {n: gran.PATTERN_MIN_SPARSITY for n in names}
    per = resolve_sparsity(names, sparsity, scope)
    for n, s in per.items():
        _check_fixed_sparsity(spec, s)
    return per


def _resolve_shapes(scores: Mapping[str, torch.Tensor],
                    shapes: Mapping[str, Sequence[int]] | nn.Module | None) -> dict[str, tuple[int, ...]]:
    if shapes is None:
        return {n: tuple(s.shape) for n, s in scores.items()}
    if isinstance(shapes, nn.Module):
        check_materialised(shapes, allow_meta=True)  # a meta model has shapes, a lazy one has not
        shapes = {n: t.shape for n, t in all_parameters(shapes).items()}
    if not isinstance(shapes, Mapping):
        raise TypeError(f"shapes must be a dict {{param_name: shape}}, a model or None, got {type(shapes).__name__}")
    missing = [n for n in scores if n not in shapes]
    if missing:
        raise ValueError(f"shapes has no entry for scored parameters {missing}")
    return {n: tuple(int(d) for d in shapes[n]) for n in scores}


def _checked_request(scores: Mapping[str, torch.Tensor], sparsity: object, spec: Spec, scope: object,
                     reduction: object, shapes: Mapping[str, Sequence[int]] | nn.Module | None) -> tuple:
    """Every check :func:`make_masks` makes before computing a mask; returns its validated
    ``(scores, scope, reduction, shapes, levels, per-parameter sparsity)`` (``per`` is
    ``None`` for heads and layers, whose builders check the sparsity against their units)."""
    scores = check_scores(scores)
    scope = check_scope(scope)
    gran.check_scope_for(spec, scope)
    reduction = check_reduction(reduction, spec)
    shapes_ = _resolve_shapes(scores, shapes)
    levels = {n: score_level(spec, n, s, shapes_[n]) for n, s in scores.items()}
    for n in scores:
        check_applicable(spec, n, shapes_[n])
    if spec.kind in gran.MODEL_UNITS:
        if not isinstance(shapes, nn.Module):
            raise ValueError(f"granularity {spec.name!r} finds its units in the model: pass the model as shapes= "
                             f"(make_masks(scores, sparsity, {spec.name!r}, shapes=model))")
        return scores, scope, reduction, shapes_, levels, None
    return scores, scope, reduction, shapes_, levels, _per_param_sparsity(spec, list(scores), sparsity, scope)


def make_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | Mapping[str, float] | None = None,
    granularity: str = "unstructured",
    scope: str = "global",
    *,
    reduction: str | None = None,
    shapes: Mapping[str, Sequence[int]] | nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Turn scores into bool keep-masks (True = kept) that remove ``sparsity`` of the units.

    * ``granularity`` -- what is removed together (see :mod:`prunekit.granularity`):
      ``"unstructured"``, ``"channel"``, ``"N:M"`` such as ``"2:4"``,
      ``"block:RxC"`` such as ``"block:4x4"``, ``"pattern"`` (3 x 3 convs),
      ``"head"`` (attention heads, :mod:`prunekit.structured.heads`), ``"layer"`` (skippable
      residual blocks, :mod:`prunekit.structured.layers`). Heads and layers are found in the
      model, so they need ``shapes=model``; their masks cover every parameter of a
      removed unit, also parameters that were not scored, and ignore scored
      parameters outside any unit.
    * ``sparsity`` -- the fraction of units removed: weights, channels, tiles, heads or
      blocks.
      Exactly ``round(sparsity * n)`` units go, per tensor (``scope="layer"``) or over
      all tensors (``scope="global"``); see :mod:`prunekit.allocation` for the tie rule
      and the at-least-one-channel rule. N:M fixes it at ``1 - N/M`` (pass ``None`` or
      that value). For ``"pattern"`` it is the weight sparsity of every layer, at least
      5/9 (``None`` = 5/9); above that whole kernels go too. A number, or (``scope=
      "layer"``) a ``{name: fraction}`` dict naming exactly the scored parameters (for
      heads: the attention modules); ``TypeError``/``ValueError`` otherwise.

      **Never everything.** A sparsity below 1 never removes a whole pool, even where
      ``round(sparsity * n)`` reaches ``n`` (0.999 of 192 weights): in layer scope every
      tensor keeps at least one unit (its best weight, tile, kernel, channel or head), so
      at most ``n - 1`` of its ``n`` units go; in global scope at most ``N - 1`` of all
      ``N`` units go, and every tensor keeps a channel (``"channel"``) or a head
      (``"head"``), while with weights and tiles the global ranking may empty a tensor
      whose scores are all low (*layer collapse*, exactly as
      ``torch.nn.utils.prune.global_unstructured``; use ``scope="layer"`` to prevent it).
      ``"layer"`` keeps at least one block. Otherwise the counts are exact.
    * ``scope`` -- ``"global"`` ranks all tensors together, ``"layer"`` each on its own
      (case-insensitive, like granularity and criterion names)
      -- for heads: each attention module on its own. N:M and pattern are local by
      construction: ``scope`` is validated and ignored. ``"layer"`` granularity
      supports ``"global"`` only.
      In global scope channel scores reduced from weight scores are normalised by the
      channel size (l2 -> RMS, l1 -> mean ``|s|``, sum -> mean) so that layers with a
      different fan-in compete fairly; within a layer this changes no ranking.
    * ``reduction`` -- how weight scores become one unit score: ``"l1"``, ``"l2"``,
      ``"sum"``, ``"mean"``; ``None`` = the granularity's default (``"l2"`` for
      channels and blocks, the L2 norm ``torch.nn.utils.prune.ln_structured(n=2)``
      uses; ``"sum"`` for patterns). Ignored by unstructured and N:M.
    * ``shapes`` -- ``{name: parameter shape}`` or the model. The model is needed for
      ``"head"`` and ``"layer"``; otherwise shapes are needed only for
      channel-level scores (shape ``[out]``): the masks then get the parameter's
      full shape; without it a mask has its score's shape. It also lets a
      weight-level granularity reject channel-level scores ("finer than the scores").

    >>> import torch
    >>> m = make_masks({"w": torch.tensor([3., 1., 2., 4.])}, sparsity=0.5)
    >>> m["w"].tolist()
    [True, False, False, True]
    >>> make_masks({"w": torch.tensor([[3., 1., 2., 4.]])}, granularity="2:4")["w"].tolist()
    [[True, False, False, True]]
    """
    spec = parse_granularity(granularity)
    scores, scope, reduction, shapes_, levels, per = _checked_request(scores, sparsity, spec, scope, reduction, shapes)
    if spec.kind in gran.MODEL_UNITS:  # units found in the model: heads, residual blocks
        build = head_masks if spec.kind == "head" else layer_masks
        return build(scores, sparsity, shapes, scope=scope, reduction=reduction)

    if spec.kind == "unstructured":
        return allocate(scores, sparsity, scope)
    if spec.kind == "channel":
        units = {n: s.detach().reshape(-1) if levels[n] == "channel"
                 else gran.channel_scores(s, reduction, normalise=scope == "global") for n, s in scores.items()}
        keep = allocate(units, sparsity, scope, min_keep=1)
        return {n: gran.channel_mask(keep[n], shapes_[n]) for n in scores}
    if spec.kind == "block":
        tiles = {n: gran.block_scores(s, spec.rows, spec.cols, reduction) for n, s in scores.items()}
        keep = allocate(tiles, sparsity, scope)
        return {n: gran.block_mask(keep[n], shapes_[n], spec.rows, spec.cols) for n in scores}
    if spec.kind == "nm":
        return {n: gran.nm_mask(s, spec.n, spec.m) for n, s in scores.items()}
    return {n: _pattern_mask(s, per[n], reduction) for n, s in scores.items()}


def _pattern_mask(score: torch.Tensor, sparsity: float, reduction: str) -> torch.Tensor:
    """Pattern pruning of one 3 x 3 conv plus connectivity pruning up to ``sparsity``."""
    idx, kernel_score = gran.pattern_choice(score, reduction)
    n = kernel_score.numel()  # every layer keeps a kernel (see allocation: never everything)
    k = min(pattern_kernel_count(n, sparsity, gran.KERNEL_AREA, gran.PATTERN_KEPT), n - 1)
    keep = prune_lowest(kernel_score.reshape(-1), k).view(kernel_score.shape)
    return gran.pattern_mask(idx, keep)


def _mark_removed(score: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores of weights (or whole channels) that ``mask`` removed become ``-inf``."""
    s = score if score.is_floating_point() else score.to(torch.float32)
    if s.shape == mask.shape:
        return s.masked_fill(~mask, float("-inf"))
    if s.dim() == 1 and mask.dim() >= 1 and s.shape[0] == mask.shape[0]:  # channel-level score
        gone = ~mask.reshape(mask.shape[0], -1).any(dim=1)
        return s.masked_fill(gone, float("-inf"))
    return s  # a mismatched shape is reported by make_masks


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
    **criterion_kwargs,
) -> dict[str, torch.Tensor]:
    """Score ``model`` with ``criterion``, mask ``sparsity`` of its weights, apply; returns the masks.

    ``sparsity`` is the *total* fraction pruned in the chosen parameters, counting what
    earlier calls already pruned: weights (and, for ``granularity="channel"``, whole
    channels) pruned before are ranked lowest, so calling ``prune(m, 0.5)`` then
    ``prune(m, 0.75)`` leaves exactly 75% pruned. It never un-prunes: the returned and
    applied mask is the new mask AND the old one, for every granularity. This differs
    from ``torch.nn.utils.prune``, whose ``amount`` is a fraction of the weights still
    remaining. ``granularity``, ``scope`` and ``reduction`` are as in
    :func:`make_masks`.

    **Coupled channels.** With ``granularity="channel"`` and ``example_inputs`` (a batch
    the model accepts), channels are pruned *per group of coupled channels* -- layers
    whose outputs are added by a residual connection, or share a BatchNorm or a depthwise
    conv, lose the same channels, chosen by the sum of their scores -- through
    :func:`prunekit.structured.groups.prune_groups`; this is the path to use before
    :func:`prunekit.compact`, which can only remove a channel that every layer of its
    group dropped. Without ``example_inputs`` every layer is pruned on its own (the model
    cannot be traced), which in a residual network removes fewer channels than asked
    once compacted. ``example_inputs`` is also passed to criteria that run a forward
    pass (SynFlow).

    Every argument is validated before the criterion runs (no forward or backward pass
    is wasted on a call that is bound to fail) and before the model is touched: the
    model must be materialised (no lazy or meta parameters), the criterion's score level
    must suit the granularity (a channel-level criterion such as ``"fpgm"`` serves
    ``"channel"`` only), and everything :func:`make_masks` checks is checked on
    placeholder scores. A sparsity dict names the pruned parameters (``include``/
    ``exclude`` chosen); entries of parameters the criterion leaves out are ignored.
    """
    spec = parse_granularity(granularity)
    crit = get_criterion(criterion)
    check_materialised(model)
    if example_inputs is not None and crit.needs_inputs:
        criterion_kwargs["example_inputs"] = example_inputs
    if spec.kind == "channel" and example_inputs is not None:
        if isinstance(sparsity, Mapping):
            raise ValueError("prune: a per-parameter sparsity dict cannot be used with granularity='channel' and "
                             "example_inputs (coupled layers share one sparsity); pass a float or omit example_inputs")
        return prune_groups(model, sparsity, example_inputs, criterion, scope, data, include=include,
                            exclude=exclude, reduction=reduction, **criterion_kwargs)
    if not isinstance(sparsity, Mapping):
        _check_fixed_sparsity(spec, sparsity)  # the number first: N:M and pattern fix or bound it
    targets = find_targets(model, include=include, exclude=exclude)
    for t in targets:  # a module's own weight_orig/weight_mask: refuse before scoring
        check_maskable(t)
    gran.check_criterion_level(spec, crit.name, crit.level)
    _check_before_scoring(model, targets, crit.level, sparsity, spec, scope, reduction)
    scores = score(model, criterion, data, include=include, exclude=exclude, **criterion_kwargs)
    # a criterion may leave parameters out (e.g. bn_scale(missing="skip")): they are not pruned
    if isinstance(sparsity, Mapping) and spec.kind not in gran.MODEL_UNITS:
        sparsity = {n: sparsity[n] for n in scores if n in sparsity}
    old = {t.name: t.mask for t in targets if t.is_masked and t.name in scores}
    for name, mask in old.items():
        scores[name] = _mark_removed(scores[name], mask)
    masks = make_masks(scores, sparsity, granularity, scope, reduction=reduction,
                       shapes=model)
    masks = {n: m & old[n] if n in old else m for n, m in masks.items()}
    apply_masks(model, masks)
    return masks


def _check_before_scoring(model: nn.Module, targets: list, level: str, sparsity: object, spec: Spec,
                          scope: object, reduction: object) -> None:
    """Run :func:`make_masks`' checks on placeholder scores shaped as the criterion's will be
    (zeros of the parameter's shape, or ``[out]`` for a channel-level criterion), so that
    every argument error comes before the criterion's forward and backward passes. Heads
    and blocks are found in the model: for them the masks are built (cheap: one score per
    unit); for the rest only the checks run."""
    placeholders = {t.name: torch.zeros(()).expand(tuple(t.shape[:1]) if level == "channel" else tuple(t.shape))
                    for t in targets}
    if spec.kind in gran.MODEL_UNITS:
        make_masks(placeholders, sparsity, spec.name, scope, reduction=reduction, shapes=model)
    else:
        _checked_request(placeholders, sparsity, spec, scope, reduction, model)

"""Granularity: what is removed together.

The survey's first axis (Cheng et al. 2024, Sec. 2) separates *unstructured* pruning
(single weights: specific speedup, needs sparse kernels) from *structured* pruning
(channels, heads, layers: universal speedup) and *semi-structured* patterns (N:M,
blocks, kernel patterns) in between. This package parses granularity names into
objects (one class per kind, :class:`~prunekit.granularity.base.Granularity`, in a
registry: :func:`parse`), maps weight-level scores to the *units* a granularity removes
(one score per unit), and maps kept units back to weight masks. Which units go is decided by
:mod:`prunekit.allocation`; :func:`prunekit.make_masks` composes the two.

Granularities
-------------
``"unstructured"``
    Single weights (Han et al. 2015).
``"channel"``
    Whole output channels: the rows of a Linear weight ``[out, in]``, the filters of a
    conv weight ``[out, in, kh, kw]`` (dim 0 of any weight). A weight-level score is
    reduced per channel (default: L2 norm, see :data:`REDUCTIONS`); a 1-D score of
    shape ``[out]`` (channel-level criteria, or a 1-D parameter) is used as it is.
    Li et al. (2017) rank filters by the L1 norm of their weights; with magnitude
    scores ``|w|`` that is ``reduction="l1"``. The default L2 norm is the one
    ``torch.nn.utils.prune.ln_structured(n=2, dim=0)`` uses, and gives the same
    channels. ``sparsity`` is the fraction of channels removed. In ``scope="global"``
    channels of different layers compete, and raw norms grow with the fan-in, so the
    reduced score is normalised by the channel size (l2 -> RMS, l1 -> mean |s|,
    sum -> mean; within one layer this changes no ranking); channel-level scores are
    used as they are. Every layer keeps at least one channel (see
    :mod:`prunekit.allocation`).
``"N:M"`` (e.g. ``"2:4"``, ``"1:4"``, ``"4:8"``)
    In every group of M consecutive weights along the input dimension exactly N are
    kept, the N with the largest scores (ties: the lower index is kept, as a stable
    descending sort reads them). The sparsity is fixed at ``1 - N/M``. Groups run
    along dim 1 (input channels) *after moving it last*: a Linear ``[out, in]`` is
    grouped along ``in``; a conv ``[out, in, kh, kw]`` is permuted to channels-last
    ``[out, kh, kw, in]`` and grouped along ``in``, so a group is M consecutive input
    channels at one kernel position -- the GEMM layout (K = kh*kw*in, channels
    fastest) that NVIDIA's sparse tensor cores and its ASP tool use (Mishra et al.
    2021; Zhou et al. 2021). M must divide ``in``. N:M is inherently local: ``scope``
    is validated but changes nothing.
``"block:RxC"`` (e.g. ``"block:4x4"``, ``"block:1x4"``)
    Whole R x C tiles of the 2-D view ``[out, in*kh*kw]`` of a weight (PyTorch's own
    row-major order) are kept or removed together (Narang et al. 2017; Gray et al.
    2017). R must divide ``out`` and C the 2-D column count; there is no padding.
    A tile's score is the reduction of its scores (default L2).
``"pattern"``
    Kernel-pattern pruning for 3 x 3 conv weights (PatDNN, Niu et al. 2020; PCONV,
    Ma et al. 2020): every kernel keeps exactly the 4 entries of one pattern of
    :data:`PATTERNS`, the one whose kept scores reduce highest (default: largest
    sum; ties: the first pattern). *Connectivity pruning* then removes whole kernels
    (the lowest kernel scores) to reach sparsities above 5/9. Any parameter that is
    not a ``[out, in, 3, 3]`` weight is a ``ValueError``; restrict pruning to 3 x 3
    convs with ``include=``/``exclude=``. ``sparsity`` is each layer's weight
    sparsity, at least 5/9; the number of kernels removed is the one that brings it
    closest (:func:`prunekit.granularity.pattern.pattern_kernel_count`). Pattern pruning is
    per kernel and connectivity pruning per layer: ``scope`` changes nothing.

``"head"``
    Whole attention heads (Michel et al. 2019; Voita et al. 2019): the rows of a head
    in the query/key/value projections and its columns in the output projection, in
    :class:`prunekit.blocks.MultiHeadSelfAttention`, :class:`torch.nn.MultiheadAttention` and
    any type registered with :func:`prunekit.granularity.heads.register`.
    Needs the model (``make_masks(..., model=model)``) to find the heads. A head's
    score is the reduction (default L2) of all its scored weights; ``sparsity`` is the
    fraction of heads removed, per attention module (``scope="layer"``) or over all
    heads (``scope="global"``, scores normalised by the head size); every module keeps a
    head. The masks cover every parameter slice of a removed head. See
    :mod:`prunekit.structured.heads` (also :func:`~prunekit.structured.heads.compact_heads`).
``"layer"``
    Whole residual branches ``x + f(x)`` that can be skipped (layer / block pruning,
    e.g. Fan et al. 2020, *LayerDrop*; the survey's Sec. 2.2): identity-shortcut ResNet
    blocks, the attention and MLP sublayers of pre-norm transformers. Needs the model
    (``model=model``). A block's score is the *normalised* reduction of its scored
    weights (default: RMS), so big blocks don't win by size; ``sparsity`` is the
    fraction of skippable blocks removed, ranked globally (``scope="global"`` only).
    The masks cover every parameter of a removed block. See :mod:`prunekit.structured.layers`
    (also :func:`~prunekit.structured.layers.drop_layers`).

Scopes: ``"unstructured"``, ``"channel"``, ``"block:RxC"`` and ``"head"`` support
``"layer"`` and ``"global"``; ``"N:M"`` and ``"pattern"`` are local (``scope`` is
validated and ignored); ``"layer"`` supports ``"global"`` only.

Already-removed weights
-----------------------
A score of ``-inf`` marks a weight removed earlier (:func:`prunekit.prune` does this
for masked parameters). In a unit's score such a weight counts as 0, and a unit whose
scores are all ``-inf`` scores ``-inf``, so removed units rank lowest and sparsity
stays cumulative.
"""

from __future__ import annotations

from . import block, channel, heads, layers, nm, pattern, unstructured  # noqa: F401  (each registers its kind)
from .base import REDUCTIONS, Granularity, parse, reduce_units, register
from .block import BlockTiles
from .block import block_mask, block_scores, tile_scores
from .channel import Channel, channel_mask, channel_scores
from .heads import Heads
from .layers import Layers
from .nm import NM, nm_mask
from .pattern import (KERNEL_AREA, PATTERN_KEPT, PATTERN_MIN_SPARSITY, PATTERNS, Pattern, pattern_choice,
                      pattern_kernel_count, pattern_mask, pattern_scores)
from .unstructured import Unstructured

__all__ = ["Granularity", "parse", "register", "parse_granularity", "GRANULARITIES", "SCOPES_SUPPORTED",
           "MODEL_UNITS", "REDUCTIONS", "DEFAULT_REDUCTION", "reduce_units", "check_reduction",
           "Unstructured", "Channel", "NM", "BlockTiles", "Pattern", "Heads", "Layers",
           "channel_scores", "channel_mask", "nm_mask", "tile_scores", "block_scores", "block_mask",
           "PATTERNS", "PATTERN_KEPT", "KERNEL_AREA", "PATTERN_MIN_SPARSITY", "pattern_kernel_count",
           "pattern_scores", "pattern_choice", "pattern_mask"]

GRANULARITIES = ("unstructured", "channel", "N:M (e.g. '2:4')", "block:RxC (e.g. 'block:4x4')", "pattern", "head",
                 "layer")

_KINDS = (Unstructured(), Channel(), NM(2, 4), BlockTiles(1, 1), Pattern(), Heads(), Layers())
#: The scopes each granularity kind supports (N:M and pattern accept both and ignore them).
SCOPES_SUPPORTED = {g.kind: g.scopes for g in _KINDS}
#: Granularities whose units are found in the model: ``make_masks`` needs ``model=``.
MODEL_UNITS = tuple(g.kind for g in _KINDS if g.needs_model)
#: The reduction used when ``reduction=None``, per kind: the L2 norm for channels, blocks,
#: heads and layers (``ln_structured(n=2)``'s choice; for layers normalised to the RMS);
#: patterns pick the largest kept sum.
DEFAULT_REDUCTION = {g.kind: g.default_reduction for g in _KINDS if g.default_reduction}


def parse_granularity(granularity: object) -> Granularity:
    """:func:`parse` under its name before 0.2.

    >>> parse_granularity("2:4")
    NM('2:4')
    >>> parse_granularity("block:1x4").name
    'block:1x4'
    >>> parse_granularity("Head").name, parse_granularity("layer").kind
    ('head', 'layer')
    """
    return parse(granularity)


def check_reduction(reduction: object, granularity: Granularity | str) -> str | None:
    """The reduction to use for ``granularity`` (its default when ``None``); ``None`` if it has none."""
    return parse(granularity).reduction(reduction)

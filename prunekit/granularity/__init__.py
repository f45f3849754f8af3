"""Granularity: what is removed together.

The survey's first axis (Cheng et al. 2024, Sec. 2) separates *unstructured* pruning
(single weights: specific speedup, needs sparse kernels) from *structured* pruning
(channels, heads, layers: universal speedup) and *semi-structured* patterns (N:M,
blocks, kernel patterns) in between. This module parses granularity names, maps
weight-level scores to the *units* a granularity removes (one score per unit), and
maps kept units back to weight masks. Which units go is decided by
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
    closest (:func:`prunekit.allocation.pattern_kernel_count`). Pattern pruning is
    per kernel and connectivity pruning per layer: ``scope`` changes nothing.

``"head"``
    Whole attention heads (Michel et al. 2019; Voita et al. 2019): the rows of a head
    in the query/key/value projections and its columns in the output projection, in
    :class:`prunekit.models.MultiHeadSelfAttention` and :class:`torch.nn.MultiheadAttention`.
    Needs the model (``make_masks(..., shapes=model)``) to find the heads. A head's
    score is the reduction (default L2) of all its scored weights; ``sparsity`` is the
    fraction of heads removed, per attention module (``scope="layer"``) or over all
    heads (``scope="global"``, scores normalised by the head size); every module keeps a
    head. The masks cover every parameter slice of a removed head. See
    :mod:`prunekit.structured.heads` (also :func:`~prunekit.structured.heads.compact_heads`).
``"layer"``
    Whole residual branches ``x + f(x)`` that can be skipped (layer / block pruning,
    e.g. Fan et al. 2020, *LayerDrop*; the survey's Sec. 2.2): identity-shortcut ResNet
    blocks, the attention and MLP sublayers of pre-norm transformers. Needs the model
    (``shapes=model``). A block's score is the *normalised* reduction of its scored
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

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

GRANULARITIES = ("unstructured", "channel", "N:M (e.g. '2:4')", "block:RxC (e.g. 'block:4x4')", "pattern", "head",
                 "layer")
PLANNED: tuple[str, ...] = ()

#: The scopes each granularity supports (N:M and pattern accept both and ignore them).
SCOPES_SUPPORTED = {"unstructured": ("global", "layer"), "channel": ("global", "layer"), "nm": ("global", "layer"),
                    "block": ("global", "layer"), "pattern": ("global", "layer"), "head": ("global", "layer"),
                    "layer": ("global",)}

#: Granularities whose units are found in the model: ``make_masks`` needs ``shapes=model``.
MODEL_UNITS = ("head", "layer")

#: How weight scores are combined into one score per unit. ``"l1"`` and ``"l2"`` are
#: norms (they ignore sign: use them for non-negative scores such as |w|); ``"sum"``
#: and ``"mean"`` keep the sign.
REDUCTIONS = ("l1", "l2", "sum", "mean")

#: The reduction used when ``reduction=None``, per granularity. Channels, blocks, heads
#: and layers use the L2 norm (``ln_structured(n=2)``'s choice; for layers normalised to
#: the RMS); patterns pick the largest kept sum.
DEFAULT_REDUCTION = {"channel": "l2", "block": "l2", "pattern": "sum", "head": "l2", "layer": "l2"}

#: The kernel-pattern library for ``"pattern"``: 8 masks of a 3 x 3 kernel, each
#: keeping 4 entries, all containing the centre and 4-connected, in the spirit of
#: PatDNN's library (Niu et al. 2020, which always keeps the central weight):
#: patterns 0-3 are the four "T" shapes (centre + 3 of its 4 neighbours), patterns
#: 4-7 the four 2 x 2 squares that contain the centre.
PATTERNS: torch.Tensor = torch.tensor([
    [[0, 1, 0], [1, 1, 1], [0, 0, 0]],  # T up
    [[0, 0, 0], [1, 1, 1], [0, 1, 0]],  # T down
    [[0, 1, 0], [1, 1, 0], [0, 1, 0]],  # T left
    [[0, 1, 0], [0, 1, 1], [0, 1, 0]],  # T right
    [[1, 1, 0], [1, 1, 0], [0, 0, 0]],  # square top-left
    [[0, 1, 1], [0, 1, 1], [0, 0, 0]],  # square top-right
    [[0, 0, 0], [1, 1, 0], [1, 1, 0]],  # square bottom-left
    [[0, 0, 0], [0, 1, 1], [0, 1, 1]],  # square bottom-right
], dtype=torch.bool)
PATTERN_KEPT = 4
KERNEL_AREA = 9
#: The sparsity pattern pruning alone reaches (5 of every 9 weights removed).
PATTERN_MIN_SPARSITY = 1 - PATTERN_KEPT / KERNEL_AREA


@dataclass(frozen=True)
class Spec:
    """A parsed granularity: ``kind`` plus N, M (for N:M) or R, C (for blocks)."""

    kind: str  # "unstructured" | "channel" | "nm" | "block" | "pattern" | "head" | "layer"
    n: int = 0
    m: int = 0
    rows: int = 0
    cols: int = 0

    @property
    def name(self) -> str:
        if self.kind == "nm":
            return f"{self.n}:{self.m}"
        if self.kind == "block":
            return f"block:{self.rows}x{self.cols}"
        return self.kind


def _implemented() -> str:
    return ", ".join(GRANULARITIES)


def parse_granularity(granularity: object) -> Spec:
    """Parse a granularity name (case-insensitive) or raise ``ValueError``/``TypeError``.

    >>> parse_granularity("2:4")
    Spec(kind='nm', n=2, m=4, rows=0, cols=0)
    >>> parse_granularity("block:1x4").name
    'block:1x4'
    >>> parse_granularity("Head").name, parse_granularity("layer").kind
    ('head', 'layer')
    """
    if not isinstance(granularity, str):
        raise TypeError(f"granularity must be a string such as 'unstructured', 'channel' or '2:4', "
                        f"got {type(granularity).__name__}")
    g = granularity.strip().lower()
    if g in ("unstructured", "channel", "pattern", "head", "layer"):
        return Spec(g)
    if nm := re.fullmatch(r"(\d+):(\d+)", g):
        n, m = int(nm[1]), int(nm[2])
        if not 1 <= n <= m - 1:
            raise ValueError(f"granularity {granularity!r}: N:M needs 1 <= N <= M-1 (N weights kept of every M), "
                             f"got N={n}, M={m}")
        return Spec("nm", n=n, m=m)
    if bl := re.fullmatch(r"block:(\d+)x(\d+)", g):
        r, c = int(bl[1]), int(bl[2])
        if r < 1 or c < 1:
            raise ValueError(f"granularity {granularity!r}: block:RxC needs R >= 1 and C >= 1, got R={r}, C={c}")
        return Spec("block", rows=r, cols=c)
    if g in PLANNED:
        raise ValueError(f"granularity {granularity!r} is not implemented yet (chapter 2); "
                         f"implemented granularities: {_implemented()}")
    raise ValueError(f"unknown granularity {granularity!r}; implemented granularities: {_implemented()}")


def check_granularity(granularity: object) -> str:
    """Return the canonical granularity name (``"2:4"``, ``"block:4x4"``, ...) or raise."""
    return parse_granularity(granularity).name


def check_scope_for(spec: Spec, scope: str) -> None:
    """Raise ``ValueError`` if ``spec`` does not support ``scope`` (see :data:`SCOPES_SUPPORTED`).

    >>> check_scope_for(parse_granularity("layer"), "layer")
    Traceback (most recent call last):
    ...
    ValueError: granularity 'layer' ranks skippable blocks against each other over the whole model: scope must be 'global', got scope='layer'
    """
    if scope not in SCOPES_SUPPORTED.get(spec.kind, (scope,)):
        raise ValueError(f"granularity {spec.name!r} ranks skippable blocks against each other over the whole model: "
                         f"scope must be {' or '.join(map(repr, SCOPES_SUPPORTED[spec.kind]))}, got scope={scope!r}")


def check_reduction(reduction: object, spec: Spec) -> str | None:
    """The reduction to use for ``spec`` (its default when ``None``); ``None`` if it has none."""
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)} or None (the granularity's default), "
                         f"got {reduction!r}")
    if spec.kind not in DEFAULT_REDUCTION:
        return None  # unstructured and N:M rank single weights: nothing to reduce
    return reduction or DEFAULT_REDUCTION[spec.kind]


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def check_applicable(spec: Spec, name: str, shape: Sequence[int]) -> None:
    """Raise ``ValueError`` if ``spec`` cannot prune a parameter of this shape."""
    shape = _shape(shape)
    if spec.kind in ("unstructured", "channel", "head", "layer"):
        return  # heads and layers: parameters outside any unit are ignored
    if len(shape) < 2:
        raise ValueError(f"granularity {spec.name!r} needs a weight with an input dimension, but {name!r} "
                         f"has shape {list(shape)}; exclude it (exclude=[{name!r}])")
    if spec.kind == "nm" and shape[1] % spec.m:
        raise ValueError(f"granularity {spec.name!r}: M={spec.m} must divide the input dimension (dim 1) of "
                         f"{name!r}, which has size {shape[1]} (shape {list(shape)})")
    if spec.kind == "block":
        out, cols = shape[0], math.prod(shape[1:])
        if out % spec.rows or cols % spec.cols:
            raise ValueError(f"granularity {spec.name!r}: tiles of {spec.rows}x{spec.cols} must divide the 2-D view "
                             f"[{out}, {cols}] of {name!r} (shape {list(shape)}): R must divide {out} and C {cols}")
    if spec.kind == "pattern" and (len(shape) != 4 or shape[2:] != (3, 3)):
        raise ValueError(f"granularity 'pattern' needs conv weights with 3x3 kernels [out, in, 3, 3], but {name!r} "
                         f"has shape {list(shape)}; restrict pruning to 3x3 convs with include=/exclude=")


def check_criterion_level(spec: Spec, criterion: str, level: str) -> None:
    """Raise ``ValueError`` if a criterion with scores of ``level`` cannot drive ``spec``.

    Channel-level scores (one per output channel) serve ``"channel"`` only: any other
    granularity needs a score per weight (the check :func:`score_level` makes on scores,
    made from the criterion's declared level before it runs).
    """
    if level == "channel" and spec.kind != "channel":
        raise ValueError(f"criterion {criterion!r} gives one score per output channel, but granularity "
                         f"{spec.name!r} needs a score per weight: asking for a finer granularity than the scores "
                         f"have; use granularity='channel' or a weight-level criterion")


def score_level(spec: Spec, name: str, score: torch.Tensor, shape: Sequence[int]) -> str:
    """``"weight"`` if ``score`` has the parameter's shape, ``"channel"`` if it is ``[out]``.

    Asking for a finer granularity than the scores have is a ``ValueError``.
    """
    shape = _shape(shape)
    got = tuple(score.shape)
    if got == shape:
        return "weight"
    if len(shape) >= 1 and got == shape[:1]:
        if spec.kind != "channel":
            raise ValueError(f"scores[{name!r}] has shape {list(got)}, one score per output channel, but granularity "
                             f"{spec.name!r} needs a score per weight (shape {list(shape)}): asking for a finer "
                             f"granularity than the scores have; use granularity='channel'")
        return "channel"
    raise ValueError(f"scores[{name!r}] has shape {list(got)}, but the parameter has shape {list(shape)}; "
                     f"a score has the parameter's shape or [out_channels] = [{shape[0] if shape else '?'}]")


def _float(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return x if x.is_floating_point() else x.double()


def reduce_units(x: torch.Tensor, dims: Sequence[int], reduction: str, normalise: bool = False) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` to one score per unit.

    ``-inf`` entries (already removed) count as 0; a unit whose entries are all ``-inf``
    scores ``-inf``. With ``normalise`` the result is divided by the unit size (for L2:
    by its square root), i.e. l1 -> mean |s|, l2 -> RMS, sum -> mean, so that units of
    different sizes are comparable.
    """
    x = _float(x)
    dims = tuple(sorted((d % x.dim() for d in dims), reverse=True))
    removed = torch.isneginf(x)
    gone = removed.all(dim=dims) if bool(removed.any()) else None
    if gone is not None:
        x = x.masked_fill(removed, 0.0)
    size = math.prod(x.shape[d] for d in dims)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    per_unit = normalise or reduction == "mean"
    r = _sum_dims(x.abs() if reduction == "l1" else x.square() if reduction == "l2" else x, dims)
    if per_unit:
        r = r / size
    if reduction == "l2":
        r = r.sqrt()  # sqrt(sum s^2), or the RMS sqrt(mean s^2) when normalised
    return r if gone is None else r.masked_fill(gone, float("-inf"))


def _sum_dims(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum over ``dims`` (given in descending order), innermost first: much faster than
    one reduction over strided dims."""
    for d in dims:
        x = x.sum(dim=d)
    return x


# --- channels ---------------------------------------------------------------------------

def channel_scores(score: torch.Tensor, reduction: str, normalise: bool = False) -> torch.Tensor:
    """One score per output channel (dim 0) of a weight-level score; 1-D scores as they are."""
    if score.dim() <= 1:
        return _float(score).reshape(-1)
    return reduce_units(score.reshape(score.shape[0], -1), (1,), reduction, normalise)


def channel_mask(keep: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Expand a per-channel keep vector ``[out]`` to a mask of ``shape`` (whole rows)."""
    shape = _shape(shape)
    return keep.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone()


# --- N:M ---------------------------------------------------------------------------------

def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N largest of every M consecutive scores along dim 1 moved last (channels-last).

    Ties keep the lower index. Requires ``score.shape[1] % m == 0`` (see
    :func:`check_applicable`). Each weight's rank in its group (how many group members
    beat it: a higher score, or an equal score at a lower index) is counted with one
    vectorised comparison per group position -- a loop over M, not over weights, and
    several times faster than sorting millions of tiny groups.
    """
    x = score.detach().movedim(1, -1)  # [out, *kernel, in]: channels-last
    cl_shape = x.shape
    g = x.reshape(-1, m).T.contiguous()  # [M, groups]: row i = i-th member of every group
    rank = torch.zeros(g.shape, dtype=torch.uint8 if m <= 255 else torch.int32, device=g.device)
    for i in range(m - 1):
        later_wins = g[i + 1:] > g[i]  # a later member beats member i only with a strictly higher score
        rank[i] += later_wins.sum(dim=0, dtype=rank.dtype)
        rank[i + 1:] += ~later_wins  # otherwise member i (lower index) beats it
    keep = (rank < n).T.reshape(cl_shape)
    return keep.movedim(-1, 1).contiguous()


# --- blocks ------------------------------------------------------------------------------

def block_scores(score: torch.Tensor, rows: int, cols: int, reduction: str) -> torch.Tensor:
    """Tile scores ``[out/R, (in*kh*kw)/C]`` of the 2-D view of ``score``."""
    x = score.reshape(score.shape[0], -1)
    tiles = x.reshape(x.shape[0] // rows, rows, x.shape[1] // cols, cols)
    return reduce_units(tiles, (1, 3), reduction)


def block_mask(keep: torch.Tensor, shape: Sequence[int], rows: int, cols: int) -> torch.Tensor:
    """Expand a tile keep-grid back to a mask of ``shape``."""
    r, c = keep.shape
    return keep[:, None, :, None].expand(r, rows, c, cols).reshape(_shape(shape)).clone()


# --- kernel patterns ---------------------------------------------------------------------

def pattern_scores(score: torch.Tensor, reduction: str) -> torch.Tensor:
    """Score ``[out, in, P]`` of every library pattern on every 3 x 3 kernel.

    A pattern's score is the reduction of the 4 scores it keeps (``-inf`` counts as 0;
    a kernel whose scores are all ``-inf`` gets ``-inf`` for every pattern).
    """
    x = _float(score).reshape(score.shape[0], score.shape[1], KERNEL_AREA)
    removed = torch.isneginf(x)
    gone = removed.all(dim=-1, keepdim=True)
    x = x.masked_fill(removed, 0.0)
    lib = PATTERNS.reshape(len(PATTERNS), KERNEL_AREA).to(x.dtype).to(x.device).T  # [9, P]
    if reduction == "sum":
        r = x @ lib
    elif reduction == "mean":
        r = (x @ lib) / PATTERN_KEPT
    elif reduction == "l1":
        r = x.abs() @ lib
    elif reduction == "l2":
        r = (x.square() @ lib).sqrt()
    else:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return r.masked_fill(gone, float("-inf"))


def pattern_choice(score: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For every kernel: the index of the best pattern (first on ties) and its score."""
    r = pattern_scores(score, reduction)
    best = r.max(dim=-1).values
    idx = torch.argmax((r == best[..., None]).to(torch.uint8), dim=-1)  # the first maximal pattern
    return idx, best


def pattern_mask(idx: torch.Tensor, keep_kernels: torch.Tensor) -> torch.Tensor:
    """Mask ``[out, in, 3, 3]``: the chosen pattern of every kept kernel, zeros elsewhere."""
    return PATTERNS.to(idx.device)[idx] & keep_kernels[..., None, None]

"""The :class:`Granularity` interface, its registry, and the reduction of scores to units.

A granularity says what is removed together. :func:`prunekit.make_masks` composes it
with the allocation axis in four steps: ``parse`` the name into an object, get one score
per ``units``, let :func:`prunekit.allocation.allocate` pick the units that stay, and
``expand`` the kept units back to parameter-shaped masks. Granularities that decide
locally (N:M, pattern) set ``allocates = False`` and build their masks in
``local_masks``.
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from .._validate import MaskRequest, resolve_sparsity

#: How weight scores are combined into one score per unit. ``"l1"`` and ``"l2"`` are
#: norms (they ignore sign: use them for non-negative scores such as |w|); ``"sum"``
#: and ``"mean"`` keep the sign.
REDUCTIONS = ("l1", "l2", "sum", "mean")

_TOL = 1e-9


def _shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


def _float(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return x if x.is_floating_point() else x.double()


def _sum_dims(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum over ``dims`` (given in descending order), innermost first: much faster than
    one reduction over strided dims."""
    for d in dims:
        x = x.sum(dim=d)
    return x


def reduce_units(x: torch.Tensor, dims: Sequence[int], reduction: str, normalise: bool = False) -> torch.Tensor:
    """Reduce ``x`` over ``dims`` to one score per unit.

    ``-inf`` entries (already removed) count as 0; a unit whose entries are all ``-inf``
    scores ``-inf``. With ``normalise`` the result is divided by the unit size (for L2:
    by its square root), i.e. l1 -> mean |s|, l2 -> RMS, sum -> mean, so that units of
    different sizes are comparable.

    >>> reduce_units(torch.tensor([[3.0, 4.0], [1.0, float("-inf")]]), (1,), "l2").tolist()
    [5.0, 1.0]
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    x = _float(x)
    dims = tuple(sorted((d % x.dim() for d in dims), reverse=True))
    removed = torch.isneginf(x)
    gone = removed.all(dim=dims) if bool(removed.any()) else None
    if gone is not None:
        x = x.masked_fill(removed, 0.0)
    size = math.prod(x.shape[d] for d in dims)
    r = _sum_dims(x.abs() if reduction == "l1" else x.square() if reduction == "l2" else x, dims)
    if normalise or reduction == "mean":
        r = r / size
    if reduction == "l2":
        r = r.sqrt()  # sqrt(sum s^2), or the RMS sqrt(mean s^2) when normalised
    return r if gone is None else r.masked_fill(gone, float("-inf"))


class Granularity:
    """What is removed together. Subclasses set the class attributes and override what differs.

    * ``kind`` -- the family (``"nm"``, ``"block"``, ...); ``name`` -- the canonical name
      (``"2:4"``, ``"block:4x4"``);
    * ``scopes`` -- the scopes it supports; ``default_reduction`` -- the reduction used
      when ``reduction=None`` (``None``: it reduces nothing, the argument is ignored);
    * ``needs_model`` -- its units are found in the model (heads, layers);
    * ``min_keep`` -- units every tensor (pool) keeps, in either scope;
    * ``allocates`` -- ``False`` when the masks are decided locally (N:M, pattern).
    """

    kind: ClassVar[str] = ""
    scopes: ClassVar[tuple[str, ...]] = ("global", "layer")
    default_reduction: ClassVar[str | None] = None
    needs_model: ClassVar[bool] = False
    min_keep: ClassVar[int] = 0
    allocates: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return self.kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.name == self.name

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    # --- argument checks (run once, into the MaskRequest) --------------------------------

    def check_scope(self, scope: str) -> None:
        """Raise ``ValueError`` if the (canonical) ``scope`` is not supported."""
        if scope not in self.scopes:
            raise ValueError(f"granularity {self.name!r} does not support scope={scope!r}: scope must be "
                             f"{' or '.join(map(repr, self.scopes))}, got scope={scope!r}")

    def reduction(self, reduction: object) -> str | None:
        """The reduction to use (the default when ``None``); ``None`` if it reduces nothing."""
        if reduction is not None:
            if not isinstance(reduction, str):
                raise TypeError(f"reduction must be one of {list(REDUCTIONS)} or None (the granularity's default), "
                                f"got {type(reduction).__name__}")
            if reduction not in REDUCTIONS:
                raise ValueError(f"reduction must be one of {list(REDUCTIONS)} or None (the granularity's default), "
                                 f"got {reduction!r}")
        return None if self.default_reduction is None else reduction or self.default_reduction

    def fixed_sparsity(self) -> float | None:
        """The sparsity ``sparsity=None`` stands for (``None``: a number is required)."""
        return None

    def check_sparsity_value(self, s: float, given: object) -> None:
        """Raise ``ValueError`` if this granularity cannot reach the (validated) sparsity ``s``."""

    def check_applicable(self, name: str, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` if a parameter of this shape cannot be pruned at this granularity."""

    def score_level(self, name: str, score: torch.Tensor, shape: Sequence[int]) -> str:
        """``"weight"`` if ``score`` has the parameter's shape, ``"channel"`` if it is ``[out]``;
        a ``ValueError`` when the score is coarser than this granularity or fits nothing."""
        shape = _shape(shape)
        got = tuple(score.shape)
        if got == shape:
            return "weight"
        if len(shape) >= 1 and got == shape[:1]:
            self.check_level(name, "channel", got, shape)
            return "channel"
        raise ValueError(f"scores[{name!r}] has shape {list(got)}, but the parameter has shape {list(shape)}; "
                         f"a score has the parameter's shape or [out_channels] = [{shape[0] if shape else '?'}]")

    def check_score_shapes(self, scores: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]] | None) -> None:
        """The checks against the score tensors (run once, when they exist): each fits its
        parameter's shape and is not coarser than this granularity (:meth:`score_level`).
        Without ``shapes`` every score is taken to be parameter-shaped, except a 1-D score
        under ``"channel"``, which is ambiguous (channel scores, or a 1-D parameter?)."""
        for n, s in scores.items():
            if shapes is not None:
                self.score_level(n, s, shapes[n])
            elif self.kind == "channel" and s.dim() == 1:
                raise ValueError(f"scores[{n!r}] is 1-D: one score per output channel, or a 1-D parameter? Pass "
                                 f"shapes={{name: parameter shape}} or model= so that the masks get the "
                                 f"parameter's shape")

    def check_level(self, name: str, level: str, got: tuple = (), shape: tuple = ()) -> None:
        """Raise ``ValueError`` if scores of ``level`` (``"channel"``) are coarser than this granularity."""
        if level == "channel":
            raise ValueError(f"scores[{name!r}] has shape {list(got)}, one score per output channel, but granularity "
                             f"{self.name!r} needs a score per weight (shape {list(shape)}): asking for a finer "
                             f"granularity than the scores have; use granularity='channel'")

    def check_criterion_level(self, criterion: str, level: str) -> None:
        """The check of :meth:`score_level`, made from a criterion's declared level before it runs."""
        if level == "channel":
            raise ValueError(f"criterion {criterion!r} gives one score per output channel, but granularity "
                             f"{self.name!r} needs a score per weight: asking for a finer granularity than the "
                             f"scores have; use granularity='channel' or a weight-level criterion")

    def find_units(self, model: nn.Module | None, names: Sequence[str]) -> tuple:
        """What the granularity finds in ``model`` for the parameters ``names`` (heads, blocks)."""
        return ()

    def pools(self, names: Sequence[str], units: tuple) -> list[str]:
        """The names a sparsity dict must give: the scored parameters, by default."""
        return list(names)

    def resolve_sparsity(self, pools: list[str], sparsity: object, scope: str) -> dict[str, float]:
        """One validated sparsity per pool (``sparsity`` a number, ``None`` or a dict)."""
        fixed = self.fixed_sparsity()
        if sparsity is None and fixed is not None:
            return {n: fixed for n in pools}
        per = resolve_sparsity(pools, sparsity, scope)
        for n, s in per.items():
            self.check_sparsity_value(s, sparsity[n] if isinstance(sparsity, Mapping) else sparsity)
        return per

    # --- masks (no checks: the request is valid) ------------------------------------------

    def units(self, scores: Mapping[str, torch.Tensor], req: MaskRequest) -> dict[str, torch.Tensor]:
        """One score per unit, keyed like the sparsity pools (any shape)."""
        return dict(scores)

    def allocation_sparsity(self, units: Mapping[str, torch.Tensor], req: MaskRequest) -> Mapping[str, float]:
        """The sparsity of every unit pool, as :func:`prunekit.allocation.allocate` takes it."""
        return req.sparsity

    def expand(self, keep: Mapping[str, torch.Tensor], req: MaskRequest,
               scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Parameter-shaped bool masks from the kept units."""
        return {n: keep[n].reshape(req.shapes[n]) for n in scores}

    def local_masks(self, scores: Mapping[str, torch.Tensor], req: MaskRequest) -> dict[str, torch.Tensor]:
        """Masks of a granularity that decides locally (``allocates = False``)."""
        raise NotImplementedError


_REGISTRY: dict[str, Callable[[str, str], Granularity | None]] = {}


def register(kind: str, parser: Callable[[str, str], Granularity | None]) -> None:
    """Register a granularity family: ``parser(key, given)`` returns the object for ``key``
    (the name lower-cased and stripped; ``given`` is the name as the caller wrote it, for
    messages), or ``None`` when the name is not one of this family (it may raise
    ``ValueError`` for a malformed member such as ``"5:4"``)."""
    _REGISTRY[kind] = parser


def parse(granularity: object) -> Granularity:
    """The granularity object for a name (case-insensitive), or ``TypeError``/``ValueError``.

    An object that is already a :class:`Granularity` is returned as it is.
    """
    if isinstance(granularity, Granularity):
        return granularity
    if not isinstance(granularity, str):
        raise TypeError(f"granularity must be a string such as 'unstructured', 'channel' or '2:4', "
                        f"got {type(granularity).__name__}")
    key = granularity.strip().lower()
    for parser in _REGISTRY.values():
        g = parser(key, granularity)
        if g is not None:
            return g
    from . import GRANULARITIES
    raise ValueError(f"unknown granularity {granularity!r}; implemented granularities: {', '.join(GRANULARITIES)}")

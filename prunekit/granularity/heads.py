"""``"head"``: whole attention heads (Michel, Levy & Neubig 2019, *Are Sixteen Heads Really
Better than One?*; Voita et al. 2019, *Analyzing Multi-Head Self-Attention*).

Where the heads are is told by an *adapter* per module type (:func:`register`):

* :class:`prunekit.blocks.MultiHeadSelfAttention` (and its subclasses): head ``h`` owns rows
  ``h*hd:(h+1)*hd`` of ``q``, ``k``, ``v`` (weight and bias) and the same columns of
  ``proj.weight``;
* :class:`torch.nn.MultiheadAttention`: the same rows of the query, key and value parts of
  ``in_proj_weight``/``in_proj_bias`` (or of ``q/k/v_proj_weight``), the same columns of
  ``out_proj.weight`` and entries of ``bias_k``/``bias_v``.

A reader's own attention module takes part once its type is registered with an adapter
``adapter(name, module) -> AttentionHeads | None``. A head's score is the reduction
(default L2) of all its scored weights; in global scope it is normalised by the head size.
Every attention module keeps at least one head. See :mod:`prunekit.structured.heads` for
the rules in full and for :func:`~prunekit.structured.heads.compact_heads`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .._validate import check_model, resolve_sparsity
from ..blocks import MultiHeadSelfAttention
from ..core.targets import all_parameters
from .base import Granularity, _float, reduce_units, register as register_granularity

__all__ = ["HeadSlice", "AttentionHeads", "register", "find_heads", "head_scores", "head_mask", "Heads"]


@dataclass(frozen=True)
class HeadSlice:
    """Where the heads sit in one parameter: head ``h`` owns the entries
    ``off + h*head_dim : off + (h+1)*head_dim`` along ``dim``, for every ``off`` in
    ``offsets`` (``in_proj_weight`` has three sections: query, key, value)."""

    param: str
    dim: int
    offsets: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class AttentionHeads:
    """One attention module: its name, the module, ``num_heads``, ``head_dim`` and where
    each head's parameters are (:class:`HeadSlice`)."""

    name: str
    module: nn.Module
    num_heads: int
    head_dim: int
    slices: tuple[HeadSlice, ...]

    @property
    def params(self) -> list[str]:
        return [s.param for s in self.slices]

    def head_params(self) -> int:
        """Number of parameters one head owns."""
        shapes = {n: t.shape for n, t in all_parameters(self.module).items()}
        prefix = self.name + "." if self.name else ""
        total = 0
        for s in self.slices:
            shape = shapes[s.param[len(prefix):]]
            total += len(s.offsets) * self.head_dim * math.prod(shape) // shape[s.dim]
        return total


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


Adapter = Callable[[str, nn.Module], "AttentionHeads | None"]
_ADAPTERS: dict[type, Adapter] = {}


def register(module_type: type, adapter: Adapter) -> None:
    """Tell head pruning where the heads of ``module_type`` (and its subclasses) are:
    ``adapter(name, module)`` returns its :class:`AttentionHeads` (``None``: no heads)."""
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if not callable(adapter):
        raise TypeError(f"adapter must be callable adapter(name, module), got {type(adapter).__name__}")
    _ADAPTERS[module_type] = adapter


def _ours(name: str, m: MultiHeadSelfAttention) -> AttentionHeads:
    params = all_parameters(m)
    sl = [HeadSlice(_join(name, f"{p}.{a}"), 0) for p in ("q", "k", "v") for a in ("weight", "bias")
          if f"{p}.{a}" in params]
    sl.append(HeadSlice(_join(name, "proj.weight"), 1))
    return AttentionHeads(name, m, m.num_heads, m.head_dim, tuple(sl))


def _torch_mha(name: str, m: nn.MultiheadAttention) -> AttentionHeads:
    params = all_parameters(m)
    e, hd = m.embed_dim, m.embed_dim // m.num_heads
    sl = []
    if "in_proj_weight" in params:
        sl.append(HeadSlice(_join(name, "in_proj_weight"), 0, (0, e, 2 * e)))
    else:
        sl += [HeadSlice(_join(name, f"{p}_proj_weight"), 0) for p in ("q", "k", "v")]
    if "in_proj_bias" in params:
        sl.append(HeadSlice(_join(name, "in_proj_bias"), 0, (0, e, 2 * e)))
    sl += [HeadSlice(_join(name, b), 2) for b in ("bias_k", "bias_v") if b in params]
    sl.append(HeadSlice(_join(name, "out_proj.weight"), 1))
    return AttentionHeads(name, m, m.num_heads, hd, tuple(sl))


register(MultiHeadSelfAttention, _ours)
register(nn.MultiheadAttention, _torch_mha)


def _adapter(m: nn.Module) -> Adapter | None:
    for cls in type(m).__mro__:  # the most specific registered type wins
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    return None


def find_heads(model: nn.Module) -> list[AttentionHeads]:
    """Every attention module of ``model`` with heads, in ``named_modules`` order.

    >>> from prunekit.blocks import ViTBlock
    >>> [(a.name, a.num_heads, a.head_dim) for a in find_heads(ViTBlock(32, 4))]
    [('attn', 4, 8)]
    """
    check_model(model)
    out = []
    for name, m in model.named_modules():
        adapter = _adapter(m)
        a = adapter(name, m) if adapter is not None else None
        if a is not None:
            out.append(a)
    return out


def _per_head(x: torch.Tensor, s: HeadSlice, num_heads: int, head_dim: int) -> torch.Tensor:
    """``x`` (a parameter-shaped tensor) as ``[num_heads, entries per head]``."""
    x = x.movedim(s.dim, 0)
    parts = [x[o:o + num_heads * head_dim].reshape(num_heads, -1) for o in s.offsets]
    return torch.cat(parts, dim=1)


def head_scores(heads: AttentionHeads, scores: Mapping[str, torch.Tensor], reduction: str = "l2",
                normalise: bool = False) -> torch.Tensor | None:
    """One score per head ``[num_heads]`` from the weight-level scores of its slices
    present in ``scores`` (``None`` when none is)."""
    pieces = [_float(_per_head(scores[s.param], s, heads.num_heads, heads.head_dim))
              for s in heads.slices if s.param in scores]
    if not pieces:
        return None
    dtype = pieces[0].dtype
    for p in pieces[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return reduce_units(torch.cat([p.to(dtype) for p in pieces], dim=1), (1,), reduction, normalise)


def head_mask(heads: AttentionHeads, s: HeadSlice, shape: Sequence[int], keep: torch.Tensor) -> torch.Tensor:
    """The mask of parameter slice ``s`` (of ``shape``) that keeps the heads ``keep`` is True on."""
    shape = torch.Size(shape)
    along = torch.ones(shape[s.dim], dtype=torch.bool)
    per_entry = keep.to(torch.bool).cpu().repeat_interleave(heads.head_dim)
    for o in s.offsets:
        along[o:o + heads.num_heads * heads.head_dim] = per_entry
    view = [1] * len(shape)
    view[s.dim] = shape[s.dim]
    return along.view(view).expand(shape).clone()


def heads_sparsity(sparsity: object, scope: str, names: list[str]) -> dict[str, float]:
    """One sparsity per attention module: a number for all, or (layer scope) a dict naming
    exactly the modules ``names``."""
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError("a per-module sparsity dict needs scope='layer'")
        missing, extra = set(names) - set(sparsity), set(sparsity) - set(names)
        if missing or extra:
            raise ValueError(f"with granularity 'head', a sparsity dict names attention modules; it must name "
                             f"exactly {names}: missing {sorted(missing, key=str)}, unknown {sorted(extra, key=str)}")
    return resolve_sparsity(names, sparsity, scope)


class Heads(Granularity):
    """Attention heads, found in the model; pools are attention modules, each keeps a head."""

    kind = "head"
    default_reduction = "l2"
    needs_model = True
    min_keep = 1

    def check_applicable(self, name, shape) -> None:
        return None  # parameters outside any head are ignored

    def find_units(self, model, names) -> tuple:
        found = find_heads(model)
        if not found:
            raise ValueError("granularity 'head': the model has no attention heads (prunekit.blocks."
                             "MultiHeadSelfAttention, torch.nn.MultiheadAttention or a type registered with "
                             "prunekit.granularity.heads.register); use granularity='channel' or 'unstructured' "
                             "for this model")
        names = set(names)
        taking_part = tuple(a for a in found if any(p in names for p in a.params))
        if not taking_part:
            raise ValueError(f"granularity 'head': none of the scored parameters belongs to an attention head; head "
                             f"parameters are e.g. {found[0].params} (check include=/exclude=)")
        return taking_part

    def pools(self, names, units) -> list[str]:
        return [a.name for a in units]

    def resolve_sparsity(self, pools, sparsity, scope) -> dict[str, float]:
        return heads_sparsity(sparsity, scope, pools)

    def units(self, scores, req) -> dict[str, torch.Tensor]:
        out = {a.name: head_scores(a, scores, req.reduction, normalise=req.normalise) for a in req.units}
        return {n: u for n, u in out.items() if u is not None}  # a criterion may leave a module out

    def expand(self, keep, req, scores) -> dict[str, torch.Tensor]:
        shapes = {n: t.shape for n, t in all_parameters(req.model).items()}
        device = next(iter(scores.values())).device
        return {s.param: head_mask(a, s, shapes[s.param], keep[a.name]).to(device)
                for a in req.units if a.name in keep for s in a.slices}


register_granularity("head", lambda key, given: Heads() if key == "head" else None)

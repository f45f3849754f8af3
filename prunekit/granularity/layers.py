"""``"layer"``: whole residual branches ``x + f(x)`` that can be skipped (layer / block pruning).

Veit et al. 2016, *Residual Networks Behave Like Ensembles of Relatively Shallow Networks*;
Fan et al. 2020, *Reducing Transformer Depth on Demand with Structured Dropout* (LayerDrop).
Which modules hold skippable branches is told by an *adapter* per module type
(:func:`register`): ``adapter(name, module, params)`` returns the module's :class:`Block`
records (``params`` lists the model's parameter names). Registered here: the library's
:class:`prunekit.blocks.BasicBlock` and :class:`prunekit.blocks.ViTBlock`; torchvision's
ResNet ``BasicBlock``/``Bottleneck`` and ViT ``EncoderBlock`` are registered the first time
blocks are looked for (torchvision is optional). A block's score is the *normalised*
reduction of its scored weights (default RMS); blocks compete over the whole model
(``scope="global"`` only) and at least one is kept. See :mod:`prunekit.structured.layers`
for the semantics of a removed block and for :func:`~prunekit.structured.layers.drop_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .._validate import check_model, check_sparsity
from ..blocks import BasicBlock, ViTBlock
from ..core.targets import all_parameters
from .base import Granularity, _float, reduce_units, register as register_granularity

__all__ = ["Block", "register", "find_blocks", "block_scores", "residual_block_scores", "Layers"]


@dataclass(frozen=True)
class Block:
    """One skippable residual branch: its unit ``name``, ``kind`` (``"post_relu"`` or
    ``"pre_norm"``), the ``parent`` module name holding it, the names of the modules
    that form it (relative to ``parent``; ``()`` = the parent itself) and its
    parameters (full names)."""

    name: str
    kind: str
    parent: str
    members: tuple[str, ...]
    params: tuple[str, ...]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def params_under(model_params: Sequence[str], prefixes: list[str]) -> tuple[str, ...]:
    """The names in ``model_params`` inside any of the modules ``prefixes``."""
    return tuple(n for n in model_params if any(n == p or n.startswith(p + ".") for p in prefixes))


Adapter = Callable[[str, nn.Module, Sequence[str]], "list[Block]"]
_ADAPTERS: dict[type, Adapter] = {}


def register(module_type: type, adapter: Adapter) -> None:
    """Tell layer pruning which residual branches of ``module_type`` (and its subclasses) can
    be skipped: ``adapter(name, module, params)`` returns a list of :class:`Block`."""
    if not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise TypeError(f"module_type must be a subclass of torch.nn.Module, got {module_type!r}")
    if not callable(adapter):
        raise TypeError(f"adapter must be callable adapter(name, module, params), got {type(adapter).__name__}")
    _ADAPTERS[module_type] = adapter


def post_relu(name: str, m: nn.Module, params: Sequence[str]) -> list[Block]:
    """``relu(f(x) + x)`` (ResNet blocks): the whole block, unless it has a ``downsample``."""
    if getattr(m, "downsample", None) is not None:
        return []
    return [Block(name, "post_relu", name, (), params_under(params, [name]) if name else tuple(params))]


def pre_norm(*branches: tuple[str, str]) -> Adapter:
    """An adapter for pre-norm blocks ``x + main(norm(x))``, one ``(main, norm)`` per branch;
    a branch whose ``main`` is ``None`` (already dropped) is skipped."""
    def adapter(name: str, m: nn.Module, params: Sequence[str]) -> list[Block]:
        out = []
        for main, norm in branches:
            if getattr(m, main, None) is None:
                continue
            members = (norm, main)
            out.append(Block(_join(name, main), "pre_norm", name, members,
                             params_under(params, [_join(name, k) for k in members])))
        return out
    return adapter


register(BasicBlock, post_relu)
register(ViTBlock, pre_norm(("attn", "norm1"), ("mlp", "norm2")))
_torchvision_done = False


def _register_torchvision() -> None:
    """torchvision's residual blocks, registered once (nothing when torchvision is missing)."""
    global _torchvision_done
    if _torchvision_done:
        return
    _torchvision_done = True
    try:
        from torchvision.models.resnet import BasicBlock as TVBasic
        from torchvision.models.resnet import Bottleneck as TVBottleneck
        from torchvision.models.vision_transformer import EncoderBlock
    except ImportError:  # pragma: no cover - torchvision is a dependency of the book, not of prunekit
        return
    for t in (TVBasic, TVBottleneck):
        _ADAPTERS.setdefault(t, post_relu)
    _ADAPTERS.setdefault(EncoderBlock, pre_norm(("self_attention", "ln_1"), ("mlp", "ln_2")))


def find_blocks(model: nn.Module) -> list[Block]:
    """The skippable residual branches of ``model`` in ``named_modules`` order.

    >>> [b.name for b in find_blocks(nn.Sequential(ViTBlock(8, 2)))]
    ['0.attn', '0.mlp']
    """
    check_model(model)
    _register_torchvision()
    params = list(all_parameters(model))
    out: list[Block] = []
    for name, m in model.named_modules():
        for cls in type(m).__mro__:
            if cls in _ADAPTERS:
                out += _ADAPTERS[cls](name, m, params)
                break
    return out


def residual_block_scores(blocks: list[Block], scores: Mapping[str, torch.Tensor], reduction: str = "l2") -> dict:
    """``{block name: tensor([score])}`` for the blocks with at least one scored
    parameter: the normalised reduction of their scored weights."""
    out = {}
    for b in blocks:
        pieces = [_float(scores[p]).reshape(-1) for p in b.params if p in scores]
        if not pieces:
            continue
        dtype = pieces[0].dtype
        for p in pieces[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        flat = torch.cat([p.to(dtype) for p in pieces]).reshape(1, -1)
        out[b.name] = reduce_units(flat, (1,), reduction, normalise=True)
    return out


block_scores = residual_block_scores  # the name of prunekit.structured.layers before 0.2


class Layers(Granularity):
    """Skippable residual branches, found in the model, ranked over the whole model."""

    kind = "layer"
    scopes = ("global",)
    default_reduction = "l2"
    needs_model = True

    def check_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ValueError(f"granularity 'layer' ranks skippable blocks against each other over the whole model: "
                             f"scope must be 'global', got scope={scope!r}")

    def check_applicable(self, name, shape) -> None:
        return None  # parameters outside any block are ignored

    def find_units(self, model, names) -> tuple:
        blocks = find_blocks(model)
        if not blocks:
            raise ValueError("granularity 'layer': the model has no skippable residual block (an identity-shortcut "
                             "ResNet block, or a pre-norm transformer sublayer; see prunekit.structured.layers); "
                             "use granularity='channel' or 'unstructured' for this model")
        names = set(names)
        if not any(p in names for b in blocks for p in b.params):
            raise ValueError(f"granularity 'layer': none of the scored parameters belongs to a skippable block; "
                             f"block parameters are e.g. {list(blocks[0].params)[:4]} (check include=/exclude=)")
        return tuple(blocks)

    def pools(self, names, units) -> list[str]:
        return ["model"]

    def resolve_sparsity(self, pools, sparsity, scope) -> dict[str, float]:
        if isinstance(sparsity, Mapping):
            raise ValueError("granularity 'layer' ranks blocks over the whole model: sparsity must be one number "
                             "(the fraction of skippable blocks removed), not a dict")
        return {"model": check_sparsity(sparsity)}

    def units(self, scores, req) -> dict[str, torch.Tensor]:
        return residual_block_scores(list(req.units), scores, req.reduction)

    def allocation_sparsity(self, units, req) -> dict[str, float]:
        return {n: req.sparsity["model"] for n in units}

    def expand(self, keep, req, scores) -> dict[str, torch.Tensor]:
        shapes = {n: t.shape for n, t in all_parameters(req.model).items()}
        device = next(iter(scores.values())).device
        return {p: torch.full(tuple(shapes[p]), bool(keep[b.name][0]), dtype=torch.bool, device=device)
                for b in req.units if b.name in keep for p in b.params}


register_granularity("layer", lambda key, given: Layers() if key == "layer" else None)

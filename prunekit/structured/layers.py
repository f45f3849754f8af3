"""Layer (block) pruning: remove whole residual branches.

The coarsest structured granularity of the survey (Cheng et al. 2024, Sec. 2.2, "layer
/ block pruning"): a residual network computes ``x + f(x)`` in its blocks, and a block
whose branch ``f`` is removed still passes its input on, so whole blocks can go
(Veit et al. 2016, *Residual Networks Behave Like Ensembles of Relatively Shallow
Networks*; Fan et al. 2020, *Reducing Transformer Depth on Demand with Structured
Dropout* (LayerDrop); Chen & Zhao 2019, *Shallowing Deep Networks: Layer-wise Pruning
based on Feature Representations*). ``granularity="layer"`` in
:func:`prunekit.make_masks` and :func:`prunekit.prune` is implemented here.

Skippable blocks (units)
------------------------
:func:`find_blocks` lists every residual branch with an identity shortcut (same shape
in and out) that it recognises:

* ``kind="post_relu"`` -- :class:`prunekit.models.BasicBlock` and torchvision's ResNet
  ``BasicBlock``/``Bottleneck`` *without* ``downsample``: ``relu(f(x) + x)``. The unit is
  the whole block (all its convolutions and BatchNorms).
* ``kind="pre_norm"`` -- the attention and the MLP sublayer of
  :class:`prunekit.models.ViTBlock` (``x + attn(norm1(x))``, ``x + mlp(norm2(x))``) and
  of torchvision's ViT ``EncoderBlock`` (``ln_1 + self_attention``, ``ln_2 + mlp``).
  The unit is the norm plus the sublayer; it is named after the sublayer
  (``"blocks.0.attn"``, ``"encoder.layers.encoder_layer_0.mlp"``).

Blocks that change the shape (a ``downsample`` shortcut) are never units.

Scores, counts, masks
---------------------
A block's score is the *normalised* reduction of all its scored weights (default
``"l2"`` -> RMS; ``"l1"`` -> mean |s|; ``"sum"``/``"mean"`` -> mean): blocks differ a
lot in size (an MLP sublayer vs an attention sublayer, a Bottleneck vs a BasicBlock),
and an unnormalised norm would always keep the biggest. ``sparsity`` is the fraction of
the blocks taking part (those with at least one scored parameter) that is removed:
exactly ``round(s * n)``, lowest first, ties to the earlier block (model order), as in
:mod:`prunekit.allocation`. Blocks compete over the whole model: only
``scope="global"``. A removed block is removed *whole*: its masks are False on every
parameter of the unit (weights, biases, BatchNorm/LayerNorm affine), scored or not;
kept blocks get all-True masks for the same parameters. Scored parameters outside any
block are ignored.

What a removed block computes (the exact semantics)
---------------------------------------------------
* ``pre_norm``: every parameter zero (norm affine included) makes the branch output
  exactly 0 (the last op is an affine map with zero weight and bias), so the sublayer
  is exactly the identity ``x``, in train and eval mode.
* ``post_relu``: the zeroed branch ends in a BatchNorm with zero gamma and beta, whose
  output is 0, so the block computes exactly ``relu(x)`` -- not ``x``. Inside a ResNet
  every block input is itself the output of a ReLU (>= 0), where ``relu(x) = x``; but
  to stay exact for any input, :func:`drop_layers` replaces such a block by
  ``nn.ReLU()`` (no parameters, no MACs), not by ``nn.Identity()``.

:func:`drop_layers` returns a copy in which every block whose parameters are all zero
(masked or not) is replaced by its exact equivalent: ``nn.ReLU()`` for ``post_relu``
blocks; for ``pre_norm`` sublayers the branch is removed from the block (our
:class:`~prunekit.models.ViTBlock` sets ``attn``/``norm1`` or ``mlp``/``norm2`` to
``None``; a torchvision ``EncoderBlock`` becomes a :class:`SkippableEncoderBlock`). The
copy gives the same outputs as the masked model and its MACs
(:func:`prunekit.count_macs`) drop by those of the removed blocks.

>>> import torch, prunekit as pk
>>> from prunekit.models import ResNet
>>> _ = torch.manual_seed(0)
>>> net = ResNet(widths=(8, 8, 16), blocks_per_stage=2).eval()
>>> [b.name for b in find_blocks(net)]
['layer1.0', 'layer1.1', 'layer2.1', 'layer3.1']
>>> masks = pk.make_masks(pk.score(net, "magnitude"), 0.5, "layer", shapes=net)
>>> _ = pk.apply_masks(net, masks)
>>> removed_blocks(net)
['layer1.1', 'layer3.1']
>>> short = drop_layers(net)
>>> short.layer1[1], short.layer3[1]
(ReLU(), ReLU())
>>> pk.count_macs(short, torch.randn(1, 3, 16, 16))[0] < pk.count_macs(net, torch.randn(1, 3, 16, 16))[0]
True
>>> x = torch.randn(2, 3, 16, 16)
>>> bool(torch.allclose(short(x), net(x), atol=1e-6))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .. import granularity as gran
from ..allocation import allocate, check_scope, check_scores, check_sparsity
from ..core.masks import copy_model
from ..blocks import BasicBlock, ViTBlock
from ..core.targets import all_parameters

__all__ = ["Block", "find_blocks", "block_scores", "layer_masks", "removed_blocks", "drop_layers",
           "SkippableEncoderBlock"]


def _torchvision_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """torchvision's residual block classes (empty when torchvision is not installed)."""
    try:
        from torchvision.models.resnet import BasicBlock as TVBasic
        from torchvision.models.resnet import Bottleneck as TVBottleneck
        from torchvision.models.vision_transformer import EncoderBlock
    except ImportError:  # pragma: no cover - torchvision is a dependency of the book, not of prunekit
        return (), ()
    return (TVBasic, TVBottleneck), (EncoderBlock,)


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


def _params_under(model_params: Mapping, prefixes: list[str]) -> tuple[str, ...]:
    return tuple(n for n in model_params if any(n == p or n.startswith(p + ".") for p in prefixes))


class SkippableEncoderBlock(nn.Module):
    """torchvision's ViT ``EncoderBlock`` with either residual branch optional.

    Computes ``x = input + dropout(self_attention(ln_1(input)))`` (skipped when
    ``self_attention`` is ``None``) then ``x + mlp(ln_2(x))`` (skipped when ``mlp`` is
    ``None``), exactly as ``EncoderBlock.forward`` does; the modules keep their names.
    """

    def __init__(self, block: nn.Module, keep_attention: bool = True, keep_mlp: bool = True) -> None:
        super().__init__()
        self.num_heads = getattr(block, "num_heads", None)
        self.ln_1 = block.ln_1 if keep_attention else None
        self.self_attention = block.self_attention if keep_attention else None
        self.dropout = block.dropout
        self.ln_2 = block.ln_2 if keep_mlp else None
        self.mlp = block.mlp if keep_mlp else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = input
        if self.self_attention is not None:
            y = self.ln_1(x)
            y, _ = self.self_attention(y, y, y, need_weights=False)
            x = self.dropout(y) + x
        if self.mlp is not None:
            x = x + self.mlp(self.ln_2(x))
        return x


def find_blocks(model: nn.Module) -> list[Block]:
    """The skippable residual branches of ``model`` in ``named_modules`` order.

    >>> from prunekit.models import TinyViT
    >>> [b.name for b in find_blocks(TinyViT(depth=2))]
    ['blocks.0.attn', 'blocks.0.mlp', 'blocks.1.attn', 'blocks.1.mlp']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    resnet_types, encoder_types = _torchvision_types()
    params = all_parameters(model)
    out: list[Block] = []
    for name, m in model.named_modules():
        if isinstance(m, (BasicBlock, *resnet_types)):
            if getattr(m, "downsample", None) is None:
                out.append(Block(name, "post_relu", name, (), _params_under(params, [name]) if name else tuple(params)))
            continue
        if isinstance(m, ViTBlock):
            branches = (("attn", "norm1"), ("mlp", "norm2"))
        elif isinstance(m, (*encoder_types, SkippableEncoderBlock)):
            branches = (("self_attention", "ln_1"), ("mlp", "ln_2"))
        else:
            continue
        for main, norm in branches:
            if getattr(m, main, None) is None:
                continue
            members = (norm, main)
            out.append(Block(_join(name, main), "pre_norm", name, members,
                             _params_under(params, [_join(name, k) for k in members])))
    return out


def block_scores(blocks: list[Block], scores: Mapping[str, torch.Tensor], reduction: str = "l2") -> dict:
    """``{block name: tensor([score])}`` for the blocks with at least one scored
    parameter: the normalised reduction of their scored weights."""
    out = {}
    for b in blocks:
        pieces = [gran._float(scores[p]).reshape(-1) for p in b.params if p in scores]
        if not pieces:
            continue
        dtype = pieces[0].dtype
        for p in pieces[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        flat = torch.cat([p.to(dtype) for p in pieces]).reshape(1, -1)
        out[b.name] = gran.reduce_units(flat, (1,), reduction, normalise=True)
    return out


def layer_masks(scores: Mapping[str, torch.Tensor], sparsity: float, model: nn.Module, scope: str = "global",
                reduction: str | None = None) -> dict[str, torch.Tensor]:
    """Masks that remove ``sparsity`` of the skippable blocks of ``model`` (True = kept).

    ``make_masks(scores, sparsity, "layer", shapes=model)`` calls this; see the module
    docstring. Raises ``ValueError`` when the model has no skippable block or none is
    scored, for ``scope="layer"`` and for a per-layer sparsity dict.
    """
    if not isinstance(model, nn.Module):
        raise ValueError("granularity 'layer' finds the residual blocks in the model: pass the model as shapes= "
                         f"(make_masks(scores, sparsity, 'layer', shapes=model)), got {type(model).__name__}")
    scores = check_scores(scores)
    spec = gran.Spec("layer")
    gran.check_scope_for(spec, check_scope(scope))
    reduction = gran.check_reduction(reduction, spec)
    if isinstance(sparsity, Mapping):
        raise ValueError("granularity 'layer' ranks blocks over the whole model: sparsity must be one number (the "
                         "fraction of skippable blocks removed), not a dict")
    s = check_sparsity(sparsity)
    blocks = find_blocks(model)
    if not blocks:
        raise ValueError("granularity 'layer': the model has no skippable residual block (an identity-shortcut "
                         "ResNet block, or a pre-norm transformer sublayer; see prunekit.structured.layers); use "
                         "granularity='channel' or 'unstructured' for this model")
    shapes = {n: t.shape for n, t in all_parameters(model).items()}
    for n, sc in scores.items():
        if n in shapes and tuple(sc.shape) != tuple(shapes[n]):
            raise ValueError(f"scores[{n!r}] has shape {list(sc.shape)}, but granularity 'layer' needs a score "
                             f"per weight (shape {list(shapes[n])})")
    units = block_scores(blocks, scores, reduction)
    if not units:
        raise ValueError(f"granularity 'layer': none of the scored parameters belongs to a skippable block; "
                         f"block parameters are e.g. {list(blocks[0].params)[:4]} (check include=/exclude=)")
    keep = allocate(units, s, "global")
    device = next(iter(scores.values())).device
    masks = {}
    for b in blocks:
        if b.name in keep:
            k = bool(keep[b.name][0])
            for p in b.params:
                masks[p] = torch.full(tuple(shapes[p]), k, dtype=torch.bool, device=device)
    return masks


def _all_zero(model_params: Mapping, names: tuple[str, ...]) -> bool:
    return bool(names) and all(not bool(model_params[n].tensor.detach().any()) for n in names)


def removed_blocks(model: nn.Module) -> list[str]:
    """Names of the skippable blocks whose parameters are all zero (masked or not)."""
    params = all_parameters(model)
    return [b.name for b in find_blocks(model) if _all_zero(params, b.params)]


def drop_layers(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without its removed blocks; ``model`` is untouched.

    Removed blocks are those of :func:`removed_blocks` (all parameters zero, e.g. after
    ``prune(model, s, granularity="layer")``). Masks are folded into the copy. See the
    module docstring for what replaces each kind of block; the copy gives the same
    outputs as the masked model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    work = copy_model(model, fold=True)
    gone = set(removed_blocks(work))
    blocks = [b for b in find_blocks(work) if b.name in gone]
    modules = dict(work.named_modules())
    dropped_branches: dict[str, set[str]] = {}
    for b in blocks:
        if b.kind == "post_relu":
            if not b.parent:
                return nn.ReLU()
            parent, _, child = b.parent.rpartition(".")
            setattr(modules[parent] if parent else work, child, nn.ReLU())
        else:
            dropped_branches.setdefault(b.parent, set()).add(b.members[1])
    for name, mains in dropped_branches.items():
        m = modules[name]
        if isinstance(m, ViTBlock):
            if "attn" in mains:
                m.attn = m.norm1 = None
            if "mlp" in mains:
                m.mlp = m.norm2 = None
            continue
        new = SkippableEncoderBlock(m, keep_attention="self_attention" not in mains and m.self_attention is not None,
                                    keep_mlp="mlp" not in mains and m.mlp is not None)
        if not name:
            return new
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else work, child, new)
    return work

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
:func:`find_blocks` (:mod:`prunekit.granularity.layers`, re-exported here) lists every
residual branch with an identity shortcut (same shape in and out) of a module type it knows
(other types take part once registered with :func:`prunekit.granularity.layers.register`):

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
>>> masks = pk.make_masks(pk.score(net, "magnitude"), 0.5, "layer", model=net)
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

from typing import Mapping

import torch
from torch import nn

from .._validate import check_model
from ..blocks import ViTBlock
from ..core.masks import copy_model
from ..core.targets import all_parameters
from ..granularity import layers as _units
from ..granularity.layers import Block, block_scores, find_blocks
from ..pipeline import make_masks

__all__ = ["Block", "find_blocks", "block_scores", "layer_masks", "removed_blocks", "drop_layers",
           "SkippableEncoderBlock"]


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


_units.register(SkippableEncoderBlock, _units.pre_norm(("self_attention", "ln_1"), ("mlp", "ln_2")))


def layer_masks(scores: Mapping[str, torch.Tensor], sparsity: float, model: nn.Module, scope: str = "global",
                reduction: str | None = None) -> dict[str, torch.Tensor]:
    """Masks that remove ``sparsity`` of the skippable blocks of ``model`` (True = kept):
    ``make_masks(scores, sparsity, "layer", scope, reduction=reduction, model=model)``; see
    the module docstring. ``ValueError`` when the model has no skippable block or none is
    scored, for ``scope="layer"`` and for a per-layer sparsity dict."""
    if not isinstance(model, nn.Module):
        raise ValueError("granularity 'layer' finds the residual blocks in the model: pass the model as model= "
                         f"(make_masks(scores, sparsity, 'layer', model=model); formerly shapes=model), got "
                         f"{type(model).__name__}")
    return make_masks(scores, sparsity, "layer", scope, reduction=reduction, model=model)


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
    check_model(model)
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

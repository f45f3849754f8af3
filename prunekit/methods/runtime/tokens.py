"""Token pruning in a Vision Transformer: keep the patches the class token attends to, fuse the rest.

EViT: Liang, Ge, Tong, Song, Wang & Xie, "Not all patches are what you need: expediting vision
transformers via token reorganizations", ICLR 2022 (arXiv 2202.07800). In chosen blocks, between
the attention and the MLP, the ``n`` non-class tokens are ranked by their *attentiveness*: the
class token's attention to them, averaged over the heads (``attn[:, :, 0, 1:].mean(heads)``).
The ``k = ceil(keep_rate · n)`` most attentive tokens are kept (in decreasing attentiveness, as
``topk`` returns them); the ``n - k`` others are fused into one token, their sum weighted by their
attentiveness (the weights are not renormalised, as in the authors' code), appended last. The
block's MLP and every later block then run on ``1 + k + 1`` tokens. When ``k = n`` (e.g.
``keep_rate=1``) nothing is pruned and no token is fused, as in the authors' code, so the
output is exactly the original one. Tokens removed are input-dependent: which patches survive
differs per image, the count does not.

Works on the library's :class:`prunekit.blocks.ViTBlock` with a
:class:`prunekit.blocks.MultiHeadSelfAttention`, in a model whose forward passes the token
sequence through its blocks and reads the class token at index 0 (as the book's TinyViT does).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..._validate import check_bool, check_int, check_model, check_number
from ...blocks import MultiHeadSelfAttention, ViTBlock
from ...metrics import count_macs

__all__ = ["EViTBlock", "evit", "evit_macs", "kept_tokens"]


def check_keep_rate(keep_rate: object) -> float:
    """``keep_rate`` as a float in (0, 1]."""
    return check_number("keep_rate", keep_rate, low=0.0, high=1.0, low_open=True,
                        what="a number in (0, 1] (the fraction of patch tokens kept)")


def kept_tokens(keep_rate: float, n: int) -> int:
    """``ceil(keep_rate · n)`` of ``n`` non-class tokens, at least 1 (EViT's ``math.ceil``).

    A product within 1e-9 of an integer counts as that integer, so ``kept_tokens(0.28, 25)``
    is 7, not 8 (``0.28 * 25 == 7.000000000000001`` in floating point). With fusion the
    sequence only gets shorter when ``k <= n - 2`` (``0.9`` of 16 tokens keeps 15 + 1 fused).
    """
    return max(1, min(n, math.ceil(keep_rate * n - 1e-9)))


def attention_with_weights(attn: MultiHeadSelfAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(attn(x), weights)``: the module's output, computed with the same operations as its
    ``forward``, and the attention weights ``[batch, heads, tokens, tokens]``."""
    b, n = x.shape[0], x.shape[1]
    q, k, v = attn._heads(attn.q(x), b, n), attn._heads(attn.k(x), b, n), attn._heads(attn.v(x), b, n)
    weights = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(attn.head_dim)), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, attn.num_heads * attn.head_dim)
    return attn.proj(out), weights


class EViTBlock(nn.Module):
    """A :class:`~prunekit.blocks.ViTBlock` that reorganises its tokens after the attention (EViT).

    ``forward(x)``: ``x = x + attn(norm1(x))``; keep the ``k = kept_tokens(keep_rate, n)``
    tokens the class token attends to most and (``fuse=True``) fuse the rest into one token
    weighted by attentiveness; ``x = x + mlp(norm2(x))``. Output ``[batch, 1 + k + fuse,
    dim]``, or the block's own output when ``k = n``. The wrapped block's parameters are shared,
    not copied. After each pass :attr:`last_tokens` is the number of output tokens and
    :attr:`last_kept` the kept token indices ``[batch, k]`` (0 = first patch token; ``None``
    when nothing was pruned).

    >>> import torch
    >>> from prunekit.blocks import ViTBlock
    >>> block = EViTBlock(ViTBlock(16, 4), keep_rate=0.5)
    >>> block(torch.randn(2, 1 + 10, 16)).shape   # class + ceil(0.5 * 10) kept + 1 fused
    torch.Size([2, 7, 16])
    """

    def __init__(self, block: ViTBlock, keep_rate: float, *, fuse: bool = True):
        super().__init__()
        if not isinstance(block, ViTBlock):
            raise TypeError(f"block must be a prunekit.blocks.ViTBlock, got {type(block).__name__}")
        if not isinstance(block.attn, MultiHeadSelfAttention) or block.norm1 is None:
            raise ValueError("block has no attention (it was dropped): EViT ranks tokens by the class token's "
                             "attention, so it needs a block with attn")
        self.keep_rate = check_keep_rate(keep_rate)
        self.fuse = check_bool("fuse", fuse)
        self.block = block
        self.last_tokens: int | None = None
        self.last_kept: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1] - 1
        k = kept_tokens(self.keep_rate, n) if n > 0 else 0
        if k == n:
            self.last_tokens, self.last_kept = x.shape[1], None
            return self.block(x)
        blk = self.block
        out, weights = attention_with_weights(blk.attn, blk.norm1(x))
        x = x + out
        attentive = weights[:, :, 0, 1:].mean(dim=1)                  # [B, n]
        idx = attentive.topk(k, dim=1).indices                          # sorted, most attentive first
        d = x.shape[-1]
        tokens = x[:, 1:]
        kept = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))
        parts = [x[:, :1], kept]
        if self.fuse:
            rest = torch.ones_like(attentive, dtype=torch.bool).scatter_(1, idx, False)
            fused = (tokens * (attentive * rest).unsqueeze(-1)).sum(dim=1, keepdim=True)
            parts.append(fused)
        x = torch.cat(parts, dim=1)
        if blk.mlp is not None:
            x = x + blk.mlp(blk.norm2(x))
        self.last_tokens, self.last_kept = x.shape[1], idx
        return x

    def extra_repr(self) -> str:
        return f"keep_rate={self.keep_rate:g}, fuse={self.fuse}"


def _vit_blocks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, ViTBlock)]


def _check_locations(locations: Iterable[int] | None, depth: int) -> list[int]:
    if locations is None:
        return list(range(1, depth))
    if isinstance(locations, (str, bytes)) or not isinstance(locations, Iterable):
        raise TypeError(f"locations must be a list of block indices (ints), got {type(locations).__name__}")
    out = [check_int("locations", i, minimum=0, maximum=depth - 1) for i in locations]
    if not out:
        raise ValueError("locations must name at least one block")
    if len(set(out)) != len(out):
        raise ValueError(f"locations must not repeat a block, got {list(locations)}")
    return sorted(out)


def evit(model: nn.Module, keep_rate: float, locations: Sequence[int] | None = None, *,
         fuse: bool = True) -> nn.Module:
    """A copy of ``model`` whose ViT blocks at ``locations`` prune tokens as in EViT; ``model`` is untouched.

    ``locations`` are indices into the model's :class:`~prunekit.blocks.ViTBlock` s in module
    order (0-based; EViT uses blocks 4, 7 and 10 of DeiT-S's 12, i.e. ``[3, 6, 9]``); the default
    is every block but the first (the default of :func:`evit_macs` too). ``keep_rate`` in (0, 1]
    is the fraction of the non-class tokens kept at each location (``ceil``, see
    :func:`kept_tokens`), so after locations ``l_1 < l_2``
    a 1 + N token input has ``1 + k_1 + 1`` then ``1 + kept_tokens(keep_rate, k_1 + 1) + 1``
    tokens (the fused token takes part in the next ranking, as in EViT). ``fuse=False``
    drops the inattentive tokens instead (EViT's ablation). Checked before anything is copied.

    Pruning in the *last* block changes no output of a model that reads the class token: the
    class token's attention output is computed before the reorganisation and the MLP acts on
    each token alone, so only the MACs drop.
    """
    check_model(model)
    keep_rate = check_keep_rate(keep_rate)
    fuse = check_bool("fuse", fuse)
    names = _vit_blocks(model)
    if not names:
        raise ValueError("evit: model has no prunekit.blocks.ViTBlock")
    chosen = [names[i] for i in _check_locations(locations, len(names))]
    for name in chosen:
        blk = model.get_submodule(name)
        if not isinstance(blk.attn, MultiHeadSelfAttention) or blk.norm1 is None:
            raise ValueError(f"locations: block {name!r} has no attention (dropped); choose a block with attn")
    pruned = copy.deepcopy(model)
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = pruned.get_submodule(parent_name) if parent_name else pruned
        setattr(parent, attr, EViTBlock(parent.get_submodule(attr), keep_rate, fuse=fuse))
    return pruned


def evit_macs(model: nn.Module, example_inputs, keep_rates: Iterable[float],
              locations: Sequence[int] | None = None, *, fuse: bool = True) -> dict[float, int]:
    """``{keep_rate: MACs}`` of :func:`evit` ``(model, keep_rate, locations)`` on ``example_inputs``,
    counted with :func:`prunekit.count_macs` (one forward pass each; the token ranking and the
    fusion are not MACs)."""
    rates = [check_keep_rate(r) for r in keep_rates]
    if not rates:
        raise ValueError("keep_rates must hold at least one keep rate")
    return {r: count_macs(evit(model, r, locations, fuse=fuse), example_inputs)[0] for r in rates}

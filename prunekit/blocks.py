"""The building blocks of prunekit's models that its structural pruning knows by name:
a ResNet :class:`BasicBlock`, an explicit :class:`MultiHeadSelfAttention` and a pre-norm
:class:`ViTBlock`.

Head pruning (:mod:`prunekit.structured.heads`) and layer dropping (:mod:`prunekit.structured.layers`) work
on these (and on torchvision's equivalents); the book's toy models in
:mod:`prunekit.models` are built from them. They live here, in the library, so that the
library never imports the book's models.

References: He et al., *Deep Residual Learning for Image Recognition* (ResNet, CVPR
2016); Vaswani et al., *Attention Is All You Need* (NeurIPS 2017); Dosovitskiy et al.,
*An Image is Worth 16x16 Words* (ViT, ICLR 2021).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from numbers import Real
from typing import Any

import torch
from torch import nn

from ._validate import check_int

__all__ = ["BasicBlock", "MultiHeadSelfAttention", "ViTBlock"]


def _check_pos_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (kept for :mod:`prunekit.models`, which imports it)."""
    return check_int(name, value, minimum=1)


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is the identity, or ``downsample`` (1x1 conv with ``stride`` -> BatchNorm)
    when the stride or the number of channels changes (He et al. 2016, option B).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and ``proj`` Linear layers.

    Input and output ``[batch, tokens, dim]``. Head ``h`` owns rows
    ``h*head_dim:(h+1)*head_dim`` of ``q``, ``k`` and ``v`` (weights and biases) and the
    same columns of ``proj.weight``; ``proj.bias`` belongs to no head. The inner width
    ``num_heads * head_dim`` may differ from ``dim``, so that pruned heads can be removed
    physically (:func:`prunekit.structured.heads.compact_heads`). The attention is written out
    (``softmax(q k^T / sqrt(head_dim)) v``) so that every product is visible to
    ``torch.fx`` and to the MAC counter.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        dim = _check_pos_int("dim", dim)
        num_heads = _check_pos_int("num_heads", num_heads)
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"num_heads must divide dim when head_dim is not given, got dim={dim}, "
                                 f"num_heads={num_heads}")
            head_dim = dim // num_heads
        head_dim = _check_pos_int("head_dim", head_dim)
        inner = num_heads * head_dim
        self.q = nn.Linear(dim, inner, bias=bias)
        self.k = nn.Linear(dim, inner, bias=bias)
        self.v = nn.Linear(dim, inner, bias=bias)
        self.proj = nn.Linear(inner, dim, bias=bias)
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim

    def _heads(self, t: torch.Tensor, b, n) -> torch.Tensor:
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, N, hd]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        q, k, v = self._heads(self.q(x), b, n), self._heads(self.k(x), b, n), self._heads(self.v(x), b, n)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, head_dim={self.head_dim}"


class ViTBlock(nn.Module):
    """A pre-norm transformer block: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``.

    ``mlp`` is ``fc1 -> act (GELU) -> fc2``. Either residual branch may be absent
    (``attn``/``norm1`` or ``mlp``/``norm2`` set to ``None``): that is how
    :func:`prunekit.structured.layers.drop_layers` removes a sublayer, and with a pre-norm residual
    removing a branch is exactly the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, head_dim: int | None = None) -> None:
        super().__init__()
        hidden = _mlp_hidden(dim, mlp_ratio)
        self.norm1: nn.LayerNorm | None = nn.LayerNorm(dim)
        self.attn: MultiHeadSelfAttention | None = MultiHeadSelfAttention(dim, num_heads, head_dim)
        self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim)
        self.mlp: nn.Sequential | None = nn.Sequential(OrderedDict(
            fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(self.norm1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


def _mlp_hidden(dim: int, mlp_ratio: Any) -> int:
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, Real):
        raise TypeError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    if not mlp_ratio > 0 or math.isinf(mlp_ratio):
        raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    return max(1, round(dim * mlp_ratio))

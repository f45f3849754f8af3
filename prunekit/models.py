"""Small models for the book: an MLP, a VGG-style CNN, a ResNet-style CNN and a tiny ViT.

All are plain :class:`torch.nn.Module` trees built from ``nn.Linear``, ``nn.Conv2d``,
``nn.BatchNorm2d``, ``nn.LayerNorm``, ``nn.ReLU``, ``nn.GELU``, pooling and ``nn.Flatten``
(plus the explicit :class:`MultiHeadSelfAttention`), with no data-dependent control flow,
so :func:`torch.fx.symbolic_trace` can trace them and parameter names are readable
(``"fc1.weight"``, ``"features.0.weight"``, ``"layer2.0.conv1.weight"``,
``"blocks.0.attn.q.weight"``). They are small (tens of thousands of parameters) so that
everything runs on a laptop CPU.

References: Simonyan & Zisserman, *Very Deep Convolutional Networks for Large-Scale Image
Recognition* (VGG, ICLR 2015); He et al., *Deep Residual Learning for Image Recognition*
(ResNet, CVPR 2016); Ioffe & Szegedy, *Batch Normalization* (ICML 2015); Vaswani et al.,
*Attention Is All You Need* (NeurIPS 2017); Dosovitskiy et al., *An Image is Worth 16x16
Words* (ViT, ICLR 2021).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .blocks import BasicBlock, MultiHeadSelfAttention, ViTBlock, _check_pos_int, _mlp_hidden

__all__ = ["MLP", "SmallCNN", "BasicBlock", "ResNet", "MultiHeadSelfAttention", "ViTBlock", "TinyViT"]


def _check_widths(name: str, widths: Any, allow_empty: bool = False) -> tuple[int, ...]:
    if isinstance(widths, int) or not isinstance(widths, Sequence):
        raise TypeError(f"{name} must be a tuple of positive ints, got {widths!r}")
    out = tuple(widths)
    if not allow_empty and not out:
        raise ValueError(f"{name} must contain at least one width, got {widths!r}")
    for w in out:
        if isinstance(w, bool) or not isinstance(w, int):
            raise TypeError(f"{name} must be a tuple of positive ints, got {widths!r}")
        if w < 1:
            raise ValueError(f"{name} must be a tuple of positive ints, got {widths!r}")
    return out


class MLP(nn.Sequential):
    """A multilayer perceptron: ``flatten -> (fc_i -> relu_i) * len(hidden) -> fc_out``.

    Being an ``nn.Sequential`` with named children, its parameters are called
    ``fc1.weight``, ``fc2.weight``, ..., and the last layer is ``fc{len(hidden)+1}``.
    It flattens its input itself, so it accepts ``[N, 64]`` as well as ``[N, 1, 8, 8]``.
    """

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (128, 64), num_classes: int = 10
    ) -> None:
        in_features = _check_pos_int("in_features", in_features)
        hidden = _check_widths("hidden", hidden, allow_empty=True)
        num_classes = _check_pos_int("num_classes", num_classes)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        width = in_features
        for i, h in enumerate(hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, h)
            layers[f"relu{i}"] = nn.ReLU()
            width = h
        layers[f"fc{len(hidden) + 1}"] = nn.Linear(width, num_classes)
        super().__init__(layers)
        self.in_features, self.hidden, self.num_classes = in_features, hidden, num_classes


class SmallCNN(nn.Module):
    """A VGG-style CNN: ``features`` then ``classifier``.

    ``features`` holds one block per entry of ``widths``: 3x3 conv (no bias) -> BatchNorm ->
    ReLU -> 2x2 max-pool, so the block ``i`` conv is ``features.{4*i}`` and its BatchNorm
    ``features.{4*i+1}`` (BatchNorm is included so BN-scaling criteria such as Network
    Slimming apply). ``classifier`` is global average pooling -> flatten -> ``Linear(widths[-1],
    hidden)`` -> ReLU -> ``Linear(hidden, num_classes)`` (or a single Linear if ``hidden`` is
    None). The input's height and width must be at least ``2 ** len(widths)``: 8x8 digits and
    32x32 images both work with the default three blocks.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        hidden: int | None = 64,
    ) -> None:
        super().__init__()
        in_channels = _check_pos_int("in_channels", in_channels)
        num_classes = _check_pos_int("num_classes", num_classes)
        widths = _check_widths("widths", widths)
        if hidden is not None:
            hidden = _check_pos_int("hidden", hidden)
        blocks: list[nn.Module] = []
        c = in_channels
        for w in widths:
            blocks += [
                nn.Conv2d(c, w, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = w
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if hidden is None:
            head.append(nn.Linear(c, num_classes))
        else:
            head += [nn.Linear(c, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        self.classifier = nn.Sequential(*head)
        self.in_channels, self.num_classes, self.widths, self.hidden = (
            in_channels,
            num_classes,
            widths,
            hidden,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def pruningnet_architecture(self):
        """This network as MetaPruning's PruningNet generates it
        (:class:`prunekit.methods.learned.metapruning.Architecture`)."""
        from .methods.learned.metapruning import Architecture

        in_channels, num_classes = self.in_channels, self.num_classes
        layers = tuple(f"features.{4 * i}" for i in range(len(self.widths)))
        layers += ("classifier.2",) if self.hidden is not None else ()
        return Architecture(in_channels, tuple(self.widths), self.hidden, num_classes, layers,
                            lambda widths, hidden: SmallCNN(in_channels, num_classes, widths, hidden))


class ResNet(nn.Module):
    """A small ResNet with torchvision-style names.

    ``conv1`` (3x3, stride 1) -> ``bn1`` -> ``relu`` -> ``layer1`` ... ``layer{len(widths)}``
    -> ``avgpool`` (global) -> ``flatten`` -> ``fc``. Stage ``i`` is an ``nn.Sequential`` of
    ``blocks_per_stage`` :class:`BasicBlock` s with ``widths[i]`` channels; every stage after
    the first halves the resolution with a stride-2 first block. Parameter names therefore read
    like ``layer2.0.conv1.weight`` and ``layer2.0.downsample.0.weight``, as in torchvision.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        in_channels = _check_pos_int("in_channels", in_channels)
        num_classes = _check_pos_int("num_classes", num_classes)
        widths = _check_widths("widths", widths)
        blocks_per_stage = _check_pos_int("blocks_per_stage", blocks_per_stage)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        c = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if (i > 0 and b == 0) else 1
                blocks.append(BasicBlock(c, w, stride))
                c = w
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.widths, self.blocks_per_stage = widths, blocks_per_stage
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def stages(self) -> list[nn.Sequential]:
        """The residual stages ``[layer1, layer2, ...]``."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.widths))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(len(self.widths)):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


# --- a tiny vision transformer --------------------------------------------------------------

class TinyViT(nn.Module):
    """A tiny Vision Transformer (Dosovitskiy et al. 2021) for 8x8 or 16x16 images.

    ``patch_embed`` (Conv2d with kernel = stride = ``patch_size``) -> prepend the learned
    ``cls_token`` -> add the learned ``pos_embed`` -> ``blocks`` (``depth`` pre-norm
    :class:`ViTBlock` s, ``blocks.{i}.attn.q.weight`` ...) -> ``norm`` (LayerNorm) ->
    ``head`` (Linear) on the class token. The defaults (8x8 one-channel digits, 4x4
    patches = 4 tokens + the class token, ``dim=32``, 2 blocks of 4 heads, MLP width 64)
    have 18,218 parameters and reach about 90% test accuracy on scikit-learn's digits
    in 5 epochs (about 2 s on one CPU core); ``patch_size=2`` gives 16 patch tokens
    and learns more slowly.
    """

    def __init__(
        self,
        image_size: int = 8,
        patch_size: int = 4,
        in_channels: int = 1,
        num_classes: int = 10,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        image_size = _check_pos_int("image_size", image_size)
        patch_size = _check_pos_int("patch_size", patch_size)
        in_channels = _check_pos_int("in_channels", in_channels)
        num_classes = _check_pos_int("num_classes", num_classes)
        dim = _check_pos_int("dim", dim)
        depth = _check_pos_int("depth", depth)
        num_heads = _check_pos_int("num_heads", num_heads)
        _mlp_hidden(dim, mlp_ratio)
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size, got image_size={image_size}, "
                             f"patch_size={patch_size}")
        if dim % num_heads:
            raise ValueError(f"num_heads must divide dim, got dim={dim}, num_heads={num_heads}")
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.image_size, self.patch_size, self.in_channels, self.num_classes = (
            image_size, patch_size, in_channels, num_classes)
        self.dim, self.depth, self.num_heads, self.mlp_ratio = dim, depth, num_heads, mlp_ratio
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, patches, dim]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])

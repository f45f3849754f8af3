"""Activation-based channel criteria: APoZ, mean activation, HRank.

Each scores the output channels of a layer from its **post-ReLU feature maps** on ``data``
(an iterable of ``(inputs, targets)``; only the inputs are used; ``batches=`` limits how
many batches). Where the activation is read:

* if a BatchNorm directly consumes the layer's output (``conv -> bn``, found with
  :func:`torch.fx.symbolic_trace`, module order as fallback), the activation is
  ``ReLU(bn(conv(x)))``; otherwise ``ReLU(layer(x))``;
* this is the network's real activation for ``conv -> BN -> ReLU`` and ``Linear -> ReLU``
  (VGG-style nets, MLPs). Where the ReLU comes after a residual addition (ResNet's
  ``conv2``/``downsample``) or no ReLU follows (the output layer), ReLU is applied to the
  channel's own output before the addition: a per-channel proxy, documented as such.

A Linear's channel is its last dimension; its "feature map" for one sample is a scalar.

* ``"apoz"`` — Hu et al. 2016, *Network Trimming: A Data-Driven Neuron Pruning Approach
  towards Efficient Deep Architectures* (arXiv:1607.03250). APoZ of channel c = fraction of
  exact zeros of its post-ReLU activation over all samples and positions. High APoZ = prune,
  so the score is ``1 - APoZ``.
* ``"mean_activation"`` — mean post-ReLU activation of the channel over samples and positions
  (the "mean activation" criterion compared by Molchanov et al. 2017, *Pruning Convolutional
  Neural Networks for Resource Efficient Inference*, ICLR).
* ``"hrank"`` — Lin et al. 2020, *HRank: Filter Pruning using High-Rank Feature Map* (CVPR):
  average over images of ``matrix_rank`` of each channel's H x W feature map (the authors hook
  the ReLU outputs, as here); higher rank = kept. Maps that are not 2-D: a scalar or vector
  has rank 1 if non-zero, else 0 (so for a Linear it is the fraction of non-zero outputs);
  a 3-D map is reshaped to (D*H, W). ``torch.linalg.matrix_rank``'s default tolerance is used.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..core.targets import Target
from .registry import register
from ._common import channel_activations, check_batches

__all__ = ["apoz", "mean_activation", "hrank", "feature_map_ranks"]


def _dims(a: torch.Tensor) -> list[int]:
    return [d for d in range(a.dim()) if d != 1]


def _zeros_and_count(a: torch.Tensor):
    zeros = (a == 0).sum(_dims(a)).to(torch.float64)
    count = torch.full_like(zeros, a.numel() // a.shape[1])
    return zeros, count


def _sum_and_count(a: torch.Tensor):
    total = a.sum(_dims(a), dtype=torch.float64)
    return total, torch.full_like(total, a.numel() // a.shape[1])


def feature_map_ranks(a: torch.Tensor) -> torch.Tensor:
    """``[N, C, *spatial]`` -> ``[N, C]`` ranks of each sample's channel map (see module doc)."""
    n, c = a.shape[:2]
    if a.dim() == 4:
        return torch.linalg.matrix_rank(a.float()).to(torch.float64)
    if a.dim() == 5:
        return torch.linalg.matrix_rank(a.float().reshape(n, c, a.shape[2] * a.shape[3], a.shape[4])).to(torch.float64)
    return (a.reshape(n, c, -1) != 0).any(-1).to(torch.float64)


def _ranks_and_count(a: torch.Tensor):
    r = feature_map_ranks(a)
    return r.sum(0), torch.full((a.shape[1],), float(a.shape[0]), dtype=torch.float64, device=a.device)


def _ratio(model, targets, data, batches, reduce) -> dict[str, torch.Tensor]:
    batches = check_batches(batches)
    acc = channel_activations(model, targets, data, batches, reduce)
    out = {}
    for t in targets:
        num, den = acc[t.name]
        dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
        out[t.name] = (num / den).to(dtype)
    return out


@register("apoz", description="1 - APoZ, the average percentage of zeros of the post-ReLU activation (Hu et al. 2016)",
          needs_data=True, level="channel", reference="hu2016apoz")
def apoz(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None) -> dict[str, torch.Tensor]:
    return {k: 1 - v for k, v in _ratio(model, targets, data, batches, _zeros_and_count).items()}


@register("mean_activation", description="mean post-ReLU activation of the channel (cf. Molchanov et al. 2017)",
          needs_data=True, level="channel", reference="molchanov2017pruning")
def mean_activation(model: nn.Module, targets: list[Target], data: Iterable, *,
                    batches: int | None = None) -> dict[str, torch.Tensor]:
    return _ratio(model, targets, data, batches, _sum_and_count)


@register("hrank", description="HRank: average rank of the channel's post-ReLU feature maps (Lin et al. 2020)",
          needs_data=True, level="channel", reference="lin2020hrank")
def hrank(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None) -> dict[str, torch.Tensor]:
    return _ratio(model, targets, data, batches, _ranks_and_count)

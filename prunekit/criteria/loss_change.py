"""Loss change, measured: zero one channel at a time and see how much the loss rises.

``"loss_change"`` (channel-level, needs data): for each output channel c of each target
layer, set that channel's weights (the filter, or the Linear row) and its bias entry to zero,
evaluate the loss on ``data`` and score ``L(without c) - L(model)``. Higher increase = more
important = kept; a negative score means the loss *drops* without the channel. Layers are
scored independently (each measurement starts from the unmodified model).

This is the exact quantity that first-order (Taylor) and second-order (OBD) criteria
approximate, and the "oracle" ranking of Molchanov et al. 2017 (*Pruning Convolutional Neural
Networks for Resource Efficient Inference*, ICLR), who report its signed and absolute
versions; this is the signed increase. The survey (Cheng et al. 2024) files it under
"loss change" criteria. Cost: one evaluation of the data per channel, so only for small nets.

``L`` is the per-sample mean: each batch's ``loss_fn(outputs, targets)`` (default
cross-entropy, assumed to average over the batch) weighted by its batch size. With a
BatchNorm after the layer the zeroed channel outputs the BN's constant shift, exactly what a
channel mask on the weight does. The model runs in eval mode by default (``mode="train"``
is accepted by :func:`prunekit.score`, but batch statistics then make the measurement
depend on the batch composition).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..core.targets import Target
from .registry import register
from ._common import batch_size, check_batches, check_loss_fn, forward_loss, iter_batches, model_device, out_channels

__all__ = ["loss_change"]


def _mean_loss(model, data, loss_fn) -> float:
    total, n = 0.0, 0
    for i, (x, y) in enumerate(data):
        b = batch_size(x)
        total += float(forward_loss(model, x, y, loss_fn, batch=i)) * b
        n += b
    return total / n


def _bias_param(t: Target) -> torch.Tensor | None:
    if t.attr != "weight":
        return None
    m = t.module
    if hasattr(m, "bias_orig") and hasattr(m, "bias_mask"):
        b = m.bias_orig
    else:
        b = getattr(m, "bias", None)
    if isinstance(b, torch.Tensor) and b.dim() == 1 and b.shape[0] == out_channels(t):
        return b
    return None


@register("loss_change", description="measured loss increase when the channel (filter and bias) is zeroed "
          "(exact; cf. the oracle of Molchanov et al. 2017)", needs_data=True, level="channel",
          reference="molchanov2017pruning")
def loss_change(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
                loss_fn=None) -> dict[str, torch.Tensor]:
    batches, loss_fn = check_batches(batches), check_loss_fn(loss_fn)
    data = list(iter_batches(data, batches, model_device(model)))
    out = {}
    with torch.no_grad():
        base = _mean_loss(model, data, loss_fn)
        for t in targets:
            w = t.parameter  # weight_orig when masked: zeroing it zeroes the effective weight
            b = _bias_param(t)
            s = torch.empty(out_channels(t), dtype=torch.float64)
            for c in range(out_channels(t)):
                saved_w = w[c].clone()
                saved_b = None if b is None else b[c].clone()
                try:
                    w[c] = 0
                    if b is not None:
                        b[c] = 0
                    s[c] = _mean_loss(model, data, loss_fn) - base
                finally:
                    w[c] = saved_w
                    if b is not None:
                        b[c] = saved_b
            dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
            out[t.name] = s.to(dtype=dtype, device=t.parameter.device)
    return out

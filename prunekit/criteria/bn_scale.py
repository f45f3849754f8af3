"""BN scaling factors: the criterion of Network Slimming.

Liu et al. 2017, *Learning Efficient Convolutional Networks through Network Slimming* (ICCV):
the importance of a channel is ``|gamma|``, the scale of the BatchNorm that follows the
layer (made meaningful by training with an L1 penalty on gamma; that training belongs to
the "learning" axis, not to this criterion). Channel-level, data-free.

The BatchNorm of a layer is the one that directly consumes its output, found with
:func:`torch.fx.symbolic_trace` (``conv -> bn`` in ``Sequential`` s and in ResNet blocks,
including ``downsample``); if the model cannot be traced, the next module in registration
order when it is a BatchNorm of matching width.

A layer without such a BatchNorm (a Linear classifier, an MLP) raises ``ValueError`` naming
it, unless ``missing="skip"``: it is then left out of the scores, so :func:`prunekit.prune`
never prunes it (as in Network Slimming, where only channels with a scaling factor are
candidates). Leaving it out, rather than scoring it ``+inf``, keeps the exact-count rule of
global allocation honest: a quota could otherwise reach the "protected" channels. A masked BatchNorm
weight is read through its mask. Without ``affine`` parameters there is no gamma: error.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.targets import Target, effective
from .registry import register
from ._common import check_choice, following_batchnorm, module_names

__all__ = ["bn_scale"]


@register("bn_scale", description="|gamma| of the BatchNorm after the layer (Liu et al. 2017, Network Slimming)",
          level="channel", reference="liu2017slimming")
def bn_scale(model: nn.Module, targets: list[Target], missing: str = "error") -> dict[str, torch.Tensor]:
    check_choice("missing", missing, ("error", "skip"))
    bns = following_batchnorm(model, targets)
    names = module_names(model)
    absent = [t.name for t in targets if bns[t.name] is None]
    if absent and missing == "error":
        raise ValueError(f"criterion 'bn_scale' needs a BatchNorm right after each layer; none follows {absent}. "
                         "Restrict the targets (e.g. exclude=['classifier.*']) or pass missing='skip' "
                         "to never prune those layers")
    out = {}
    for t in targets:
        bn = bns[t.name]
        dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
        if bn is None:
            continue
        gamma = effective(bn, "weight")
        if gamma is None:
            raise ValueError(f"criterion 'bn_scale': the BatchNorm {names.get(id(bn), '?')!r} after {t.name!r} "
                             "has no scale (affine=False)")
        out[t.name] = gamma.detach().abs().to(dtype)
    return out

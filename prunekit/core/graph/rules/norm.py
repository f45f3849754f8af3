"""Norms: BatchNorm (per channel) and norms across the channels (LayerNorm, GroupNorm, RMSNorm)."""

from __future__ import annotations

from .. import ops
from . import register_rule


def batchnorm(tr, node, args):
    """BatchNorm passes a space through unchanged (channels at dim 1); its entries
    (``weight``, ``bias``, ``running_mean``, ``running_var``) are *members* of the group,
    removed with the channels."""
    src = args[0]
    if not tr.unit(src) or tr.cd(src) != 1:
        return tr.barrier(node, args)
    for sid, *_ in tr.info[src]:
        tr.space(sid).bns.append(node.target)
    tr.bn_in[node.target] = tr.info[src]
    return tr.passthrough(node, src, spatial=True)


def channel_norm(tr, node, args):
    """**LayerNorm, GroupNorm, RMSNorm** (module or functional, e.g. torchvision's
    ``LayerNorm2d``) normalise *across* the channels: the mean and variance over ``C``
    channels, one of them zero, differ from those over the ``C - 1`` others, so no channel
    of a normalised space can be removed exactly. Their input space is a *barrier* (the
    channels are kept); the output is the same space. In a ConvNeXt or ViT the residual
    stream is normalised in every block, so the stream and everything added into it (stem/patch
    embedding, depthwise convs on the stream, the MLP output projections) keep their channels,
    and what can be pruned is the MLP hidden channels (``Linear(C, 4C) -> GELU ->
    Linear(4C, C)``), which reach no norm."""
    first = node.args[0] if node.args else None
    if node.op != "call_module" and (first not in args or first in tr.consts):
        return tr.barrier(node, args)
    src = first if node.op != "call_module" else args[0]
    tr.barrier(node, [src], "normalisation over the channels (LayerNorm/GroupNorm: a removed "
               "channel changes the others' mean and variance), so its channels are never removed",
               output=False)
    tr.cdim[node] = tr.cd(src)
    return tr.info[src]


register_rule(ops.BATCHNORMS, batchnorm)
register_rule(ops.CHANNEL_NORM_MODULES, channel_norm)
register_rule(tuple(ops.CHANNEL_NORM_FUNCTIONS), channel_norm)

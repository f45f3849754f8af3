"""Attention."""

from __future__ import annotations

from torch import nn
from torch.fx.passes.shape_prop import TensorMetadata

from . import register_rule


def multihead_attention(tr, node, args):
    """``nn.MultiheadAttention`` mixes its inputs' channels: a barrier (the channels that reach
    it are kept; attention heads are pruned by :func:`prunekit.compact_heads`). Its output
    (``out_proj``'s channels, last) is a fixed space of its own, so a residual stream stays one
    group around it."""
    tm = node.meta.get("tensor_meta")
    if not (isinstance(tm, (tuple, list)) and tm and isinstance(tm[0], TensorMetadata)):
        return tr.barrier(node, args)
    what = f"{tr.where(node)}: attention"
    tr.barrier(node, args, "attention", output=False)
    out = tr.new(tm[0].shape[-1], fixed=True)
    tr.space(out).barriers.append(what)
    tr.multi[node] = [[(out, 1, None)]] + [None] * (len(tm) - 1)
    tr.cdim[node] = len(tm[0].shape) - 1
    return tr.multi[node][0]


register_rule(nn.MultiheadAttention, multihead_attention, single_input=False, multi_output=True)

"""Conv and Linear layers: where channel spaces begin and end."""

from __future__ import annotations

from torch import nn

from .. import ops
from . import register_rule


def conv(tr, node, args):
    """A Conv output opens a space; its *producer* is that layer, and its input dimension is a
    *consumer* of the space it reads (the channels must be dim 1, one feature each).

    * a **depthwise** conv (``groups == in_channels == out_channels``) keeps the space of its
      input: its filters and biases are members, removed with the channels of its input (a
      zero input channel gives a zero output once the bias entry is zero). It does not vote:
      a channel only the depthwise conv masks stays, as a zero filter;
    * a **grouped conv** with ``g`` groups (``1 < g``, not depthwise: RegNet, ResNeXt) keeps
      ``g``: its input space and its output space stay separate groups (a removed input
      channel is zero, so its columns can go whatever the outputs do), but each is split
      into ``g`` equal consecutive *parts* (the conv's groups) that must keep the same number
      of channels. **Rule:** after the vote, every part keeps as many channels as the part
      that keeps the most; a part that keeps fewer keeps, in addition, its lowest-indexed
      removed channels (the union rule: never fewer than the masks keep). A space read or
      written by several grouped convs is balanced for each of their ``g`` until all hold.
      Each group of the compacted conv keeps its own columns (the input part's kept
      channels), so ``groups`` is unchanged and the weight is ``[g * out_per_group,
      in_per_group, k, k]``. (Torch-Pruning also keeps ``g`` and removes the same positions
      in every group; here the masks may differ per group.) A grouped conv on a
      concatenation is unsupported.
    """
    m, src = tr.modules[node.target], args[0]
    if not tr.unit(src) or tr.cd(src) != 1:
        return tr.barrier(node, args)
    if m.groups == 1:
        tr.consumer(node.target, src)
        return tr.producer(node.target, m.out_channels)
    if m.groups == m.in_channels == m.out_channels:
        for sid, *_ in tr.info[src]:
            tr.space(sid).depthwise.append(node.target)
        tr.module_out[node.target] = tr.info[src]
        return tr.info[src]
    if len(tr.info[src]) != 1 or not tr.whole(src):
        return tr.barrier(node, args, f"grouped convolution (groups={m.groups}) on a concatenation "
                          "or on shuffled/split channels")
    tr.consumer(node.target, src)
    tr.space(tr.info[src][0][0]).partitions.append(m.groups)
    out = tr.producer(node.target, m.out_channels)
    tr.space(out[0][0]).partitions.append(m.groups)
    tr.grouped[node.target] = m.groups
    return out


def linear(tr, node, args):
    """A Linear output opens a space (its producer is that layer), in the *last* dim (``[N, F]``,
    ``[N, L, C]`` tokens, ``[N, H, W, C]`` channels-last). A Linear acts on the last dim, so
    its input channels must be there to make it a consumer; a Linear over another dim is a
    barrier for the tracked channels."""
    m, src = tr.modules[node.target], args[0]
    shape = tr.shape(src)
    if shape is None or len(shape) < 2:
        return tr.barrier(node, args)
    if tr.cd(src) == len(shape) - 1:
        tr.consumer(node.target, src)
    else:  # it mixes another dim: the tracked channels may not lose anything
        tr.barrier(node, args, "Linear over a dim other than the channels", output=False)
    tr.cdim[node] = len(shape) - 1
    return tr.producer(node.target, m.out_features)


register_rule(ops.CONVS, conv)
register_rule(nn.Linear, linear)

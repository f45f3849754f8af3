"""Indexing, slicing and chunking along or across the channels."""

from __future__ import annotations

import operator

import torch
from torch.fx.passes.shape_prop import TensorMetadata

from . import register_rule


def getitem(tr, node, args):
    """Indexing that leaves the channel dim whole (``x[:, 0]``, ViT's class token) keeps the
    channels. A constant slice of the channels ``x[:, a:b]`` is sliced at the same positions in
    the compacted model, so the channels at positions ``< b`` are *pinned* (kept). Indexing
    the channels other than by a slice is unsupported."""
    src = node.args[0] if node.args else None
    if not (len(args) == 1 and src is args[0] and tr.shape(src) is not None):
        return tr.barrier(node, args)
    idx = node.args[1]
    idx = idx if isinstance(idx, tuple) else (idx,)
    d = tr.cd(src)
    si, so = tr.shape(src), tr.shape(node)
    if any(not isinstance(i, (int, slice)) for i in idx) or len(idx) > len(si):
        return tr.barrier(node, [src])
    new = d - sum(isinstance(i, int) for i in idx[:d])
    out = tr.info[src]
    if d < len(idx) and idx[d] != slice(None):  # a slice of the channels: x[:, a:b]
        c = idx[d]
        if (not isinstance(c, slice) or not tr.unit(src)
                or not all(v is None or isinstance(v, int) for v in (c.start, c.stop, c.step))):
            return tr.barrier(node, [src])
        pos = tr.positions(out)
        out = tr.segments(pos[c])
        # the bounds are constants: the compacted model slices at the same positions, so the
        # channels before the last one read keep their places (pinned: never removed)
        last = max(range(len(pos))[c], default=-1)
        tr.pins.extend(pos[:last + 1])
    if so is None or new >= len(so) or so[new] != sum(tr.space(sid).size if i is None else len(i)
                                                       for sid, _, i in out):
        return tr.barrier(node, [src])
    tr.cdim[node] = new
    return out


def chunk(tr, node, args):
    """``chunk(n)`` along the channels gives each part its positions' channels; the compacted
    model chunks its own channels into ``n`` equal parts, so every part must keep as many as
    the others (**rule:** the parts that keep fewer keep, in addition, their lowest removed
    positions). ``split`` with given sizes is unsupported."""
    src = node.args[0] if node.args else None
    tms = node.meta.get("tensor_meta")
    if not (len(args) == 1 and src is args[0] and isinstance(tms, (tuple, list))):
        return tr.barrier(node, args)
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    d = tr.cd(src)
    name = getattr(node.target, "__name__", node.target)
    if (name != "chunk" or tr.shape(src) is None or not isinstance(dim, int)
            or dim % len(tr.shape(src)) != d or not tr.unit(src)
            or not all(isinstance(t, TensorMetadata) and t.shape[d] == tms[0].shape[d] for t in tms)):
        return tr.barrier(node, [src])
    pos, parts, start = tr.positions(tr.info[src]), [], 0
    for t in tms:
        parts.append(tr.segments(pos[start:start + t.shape[d]]))
        start += t.shape[d]
    tr.chunks.append([pos[i * tms[0].shape[d]:(i + 1) * tms[0].shape[d]] for i in range(len(tms))])
    tr.multi[node] = parts
    tr.cdim[node] = d
    return tr.info[src]


def part(tr, node, src, args):
    """``parts[i]`` of a chunk (or of attention's outputs): that part's segments (``None`` for an
    output without channels, e.g. attention weights); any other use of the parts is a barrier."""
    if (len(args) == 1 and node.args and node.args[0] is src and node.op == "call_function"
            and node.target is operator.getitem and isinstance(node.args[1], int)):
        tr.cdim[node] = tr.cd(src)
        return tr.multi[src][node.args[1]]
    return tr.barrier(node, args)


register_rule(operator.getitem, getitem)
register_rule((torch.chunk, torch.split, torch.tensor_split), chunk, multi_output=True)
register_rule(("chunk", "split"), chunk, multi_output=True)

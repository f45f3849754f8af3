"""Concatenations and sums."""

from __future__ import annotations

import operator

import torch
from torch import fx

from . import register_rule


def cat(tr, node, args):
    """A concatenation along the channels (``torch.cat(xs, dim=1)``) lays the spaces of its
    parts side by side: each part keeps its own channels, at its own offset (DenseNet,
    GoogLeNet/Inception); a BatchNorm or conv after it indexes all parts. Concatenation along
    another dim (tokens) merges the parts' channel spaces. Concatenation with a parameter (a
    class token) is unsupported: its values at removed channels are not zero."""
    first = node.args[0] if node.args else None
    parts = first if isinstance(first, (list, tuple)) else None
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    so = tr.shape(node)
    if (parts and isinstance(dim, int) and len(so) >= 2
            and all(isinstance(p, fx.Node) and tr.info.get(p) is not None for p in parts)):
        d = tr.cd(parts[0])
        if dim % len(so) == d and all(tr.cd(p) == d for p in parts):
            tr.cdim[node] = d
            return [seg for p in parts for seg in tr.info[p]]
        if (dim % len(so) != d and not any(p in tr.consts for p in parts)
                and all(tr.same_channels(parts[0], p) for p in parts[1:])):
            out = tr.info[parts[0]]
            for p in parts[1:]:
                out = tr.merge(node, parts[0], p)
            return out
        if any(p in tr.consts for p in parts):
            return tr.barrier(node, args, "concatenation with a parameter (e.g. a class token), "
                              "whose values at removed channels are not zero")
    return tr.barrier(node, args)


def add(tr, node, args):
    """A residual addition ``a + b`` of tensors with the same shape and channel layout merges
    the spaces of ``a`` and ``b``: a channel goes only if it goes from both. An addition of a
    constant (a position embedding) is unsupported."""
    data = [a for a in args if a not in tr.consts]
    if (len(args) == 2 and len(node.args) == 2 and "alpha" not in node.kwargs and len(data) == 2
            and tr.shape(args[0]) == tr.shape(args[1]) and tr.same_channels(args[0], args[1])):
        return tr.merge(node, args[0], args[1])
    return tr.barrier(node, args)


register_rule((torch.cat, torch.concat), cat)
register_rule((operator.add, operator.iadd, torch.add), add)

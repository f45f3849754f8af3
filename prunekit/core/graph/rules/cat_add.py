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
    another dim (tokens) merges the parts' channel spaces. A part that is a **parameter**
    repeated over the batch (ViT's class token ``class_token.expand(N, -1, -1)``, ``[1, 1, C]``)
    is a *member* of the group: sliced with the channels, and zeroed on removed channels by
    ``zero_removed_channels`` (so a removed channel stays zero). A part computed otherwise from
    parameters is a barrier."""
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
            out = _cat_with_parameters(tr, node, parts, dim % len(so))
            if out is not None:
                return out
            return tr.barrier(node, args, "concatenation with a parameter (e.g. a class token), "
                              "whose values at removed channels are not zero")
    return tr.barrier(node, args)


def _cat_with_parameters(tr, node, parts, dim):
    """Tokens concatenated with parameters (class tokens): the data parts' group, the parameters members."""
    data = [p for p in parts if p not in tr.consts]
    consts = [p for p in parts if p in tr.consts]
    if not data or not all(tr.same_channels(data[0], p) for p in data[1:]) or not tr.unit(data[0]):
        return None
    d, so = tr.cd(data[0]), tr.shape(node)
    if d == dim:
        return None
    members = []
    for c in consts:
        root = tr.const_root.get(c)
        sc = tr.shape(c)
        if root is None or sc is None or len(sc) != len(so) or sc[d] != so[d]:
            return None
        name, offset = root
        pshape = tr.shape(_attr_node(tr, name))
        if pshape is None or d - offset < 0 or pshape[d - offset] != so[d]:
            return None
        members.append((name, d - offset))
    out = tr.info[data[0]]
    for p in data[1:]:
        out = tr.merge(node, data[0], p)
    if not all(tr.member_param(name, pd, out) for name, pd in members):
        return None
    tr.cdim[node] = d
    return out


def _attr_node(tr, target):
    return next((n for n in tr.gm.graph.nodes if n.op == "get_attr" and n.target == target), None)


def add(tr, node, args):
    """A residual addition ``a + b`` of tensors with the same shape and channel layout merges
    the spaces of ``a`` and ``b``: a channel goes only if it goes from both. Adding a
    **parameter** that varies along the channels (ViT's position embedding ``[1, L, C]`` on
    ``[N, L, C]`` tokens) makes it a *member*: sliced with the channels, and zeroed on removed
    channels by ``zero_removed_channels``. Adding a constant that does not vary along the
    channels (a scalar offset, a ``[C]``-broadcast of size 1) is a barrier: a removed channel
    would not stay zero."""
    data = [a for a in args if a not in tr.consts]
    if (len(args) == 2 and len(node.args) == 2 and "alpha" not in node.kwargs and len(data) == 2
            and tr.shape(args[0]) == tr.shape(args[1]) and tr.same_channels(args[0], args[1])):
        return tr.merge(node, args[0], args[1])
    if len(args) == 2 and len(node.args) == 2 and "alpha" not in node.kwargs and len(data) == 1:
        x = data[0]
        c = args[1] if args[0] is x else args[0]
        sx, sc, so = tr.shape(x), tr.shape(c), tr.shape(node)
        root = tr.const_root.get(c)
        if sx is not None and sc is not None and so == sx and len(sc) <= len(sx) and root is not None:
            d = tr.cd(x)
            dc = d - (len(sx) - len(sc))
            name, offset = root
            if dc >= 0 and sc[dc] == sx[d] and dc - offset >= 0 and tr.member_param(name, dc - offset, x):
                tr.cdim[node] = d
                return tr.info[x]
    return tr.barrier(node, args)


register_rule((torch.cat, torch.concat), cat)
register_rule((operator.add, operator.iadd, torch.add), add)

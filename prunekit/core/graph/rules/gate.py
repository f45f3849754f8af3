"""Products: scaling by a parameter, squeeze-and-excitation gates, ``x * scalar``."""

from __future__ import annotations

import operator

import torch

from . import register_rule


def scaled(tr, node, x, c):
    """``x * c`` or ``x / c`` with ``c`` a parameter or buffer keeps ``x``'s channels (a zero
    stays zero); when ``c`` varies along the channels -- ConvNeXt's layer scale, a ``[C, 1, 1]``
    parameter -- it is a member, sliced with the channels. ``None`` if it does not apply."""
    sx, sc, so = tr.shape(x), tr.shape(c), tr.shape(node)
    if sx is None or sc is None or so != sx or len(sc) > len(sx):
        return None
    d = tr.cd(x)
    dc = d - (len(sx) - len(sc))  # the dim of c that broadcasts against the channels
    if dc < 0 or sc[dc] == 1:
        tr.cdim[node] = d
        return tr.info[x]
    if c.op != "get_attr" or c.target in tr.attr_in or sc[dc] != sx[d]:
        return None
    tr.member_param(c.target, dc, x)
    tr.cdim[node] = d
    return tr.info[x]


def gate_product(tr, node, args):
    """A squeeze-and-excitation product ``gate * x`` (the gate from a sigmoid/hardsigmoid,
    shape ``[N, C, 1, 1]``) couples the gate's channels to those of ``x``: a removed channel of
    ``x`` is zero whatever the gate, so the gate's producer is sliced alike but does not vote
    (MobileNetV3, EfficientNet). A product of two ungated tensors of equal shape merges their
    groups (both vote); a gate used any other way (its value at a removed channel is not zero)
    is unsupported. ``None`` if it does not apply."""
    a, b = args
    sa, sb = tr.shape(a), tr.shape(b)
    so = tr.shape(node)
    if sa is None or sb is None or len(sa) < 2 or sa[:2] != sb[:2] or tr.cd(a) != 1 or tr.cd(b) != 1:
        return None
    ia, ib = tr.info[a], tr.info[b]
    if (len(ia) != len(ib) or not tr.whole(a) or not tr.whole(b)
            or any(ra != 1 or rb != 1 for (_, ra, _), (_, rb, _) in zip(ia, ib))):
        return None
    if b in tr.gates and a not in tr.gates and sa == so:
        data, gate = ia, ib
    elif a in tr.gates and b not in tr.gates and sb == so:
        data, gate = ib, ia
    elif a not in tr.gates and b not in tr.gates and sa == sb:
        where = tr.where(node)
        return [(tr.union(x, y, where), 1, None) for (x, *_), (y, *_) in zip(ia, ib)]
    else:
        return None
    where = tr.where(node)
    out = []
    for (d, *_), (g, *_) in zip(data, gate):
        if tr.find(d) == tr.find(g):  # x * sigmoid(x): nothing to couple
            out.append((d, 1, None))
            continue
        if tr.space(g).fixed or tr.space(d).size != tr.space(g).size:
            return None
        tr.follows.append((g, d, where))
        out.append((d, 1, None))
    return out


def product(tr, node, args):
    """``x * c``, ``x / c`` (:func:`scaled`), ``gate * x`` (:func:`gate_product`) and ``x * 2``
    (a scalar keeps the channels); anything else is a barrier."""
    t = node.target
    data = [a for a in args if a not in tr.consts]
    if (t in (operator.mul, operator.imul, torch.mul) and len(args) == 2 and len(data) == 1
            or t in (operator.truediv, torch.div) and len(args) == 2 and data == args[:1]):
        out = scaled(tr, node, data[0], args[1] if data[0] is args[0] else args[0])
        return out if out is not None else tr.barrier(node, args)
    if len(args) == 2 and len(node.args) == 2 and t in (operator.mul, torch.mul):
        out = gate_product(tr, node, args)
        return out if out is not None else tr.barrier(node, args)
    if (len(args) == 1 and len(node.args) == 2 and node.args[0] is args[0]
            and isinstance(node.args[1], (int, float))) or (
            len(args) == 1 and len(node.args) == 2 and node.args[1] is args[0]
            and isinstance(node.args[0], (int, float)) and t in (operator.mul, torch.mul)):
        return tr.passthrough(node, args[0])
    return tr.barrier(node, args)


register_rule((operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div), product)

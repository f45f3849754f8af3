"""Permutes and transposes: the channels move to another dim."""

from __future__ import annotations

import torch

from . import register_rule


def permute(tr, node, args):
    """``permute``/``transpose``/``swapaxes`` keep the channels and move their dim
    (ConvNeXt's channels-last ``[N, H, W, C]``, ViT's tokens ``[N, L, C]``)."""
    src = node.args[0] if node.args else None
    if not (len(args) == 1 and src is args[0]):
        return tr.barrier(node, args)
    if tr.shape(src) is None:
        return tr.barrier(node, [src])
    n = len(tr.shape(src))
    rest = [a for a in node.args[1:]] + [v for k, v in node.kwargs.items() if k in ("dims", "dim0", "dim1")]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not all(isinstance(r, int) for r in rest):
        return tr.barrier(node, [src])
    d = tr.cd(src)
    name = getattr(node.target, "__name__", node.target)
    if name == "permute":
        perm = [r % n for r in rest]
        if sorted(perm) != list(range(n)):
            return tr.barrier(node, [src])
        tr.cdim[node] = perm.index(d)
    else:
        if len(rest) != 2:
            return tr.barrier(node, [src])
        a, b = (r % n for r in rest)
        tr.cdim[node] = b if d == a else a if d == b else d
    return tr.info[src]


register_rule((torch.permute, torch.transpose, torch.swapaxes, torch.swapdims), permute)
register_rule(("permute", "transpose", "swapaxes", "swapdims"), permute)

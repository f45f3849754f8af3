"""Reshapes: flatten, view/reshape that keep the channel dim, and channel shuffles."""

from __future__ import annotations

import math

import torch
from torch import fx, nn

from . import register_rule

_FUNCTIONS = (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze)
_METHODS = ("flatten", "view", "reshape", "squeeze", "unsqueeze")
_PERMUTES = {"permute", "transpose", "swapaxes", "swapdims", "contiguous", "clone", "detach"}


def keep_channels(tr, node, src, quiet: bool = False):
    """A reshape that keeps the channel dim: only dims before or after it are merged or split
    (``[N, C, H, W] -> [N, C, H*W]``, ``[N, L, C] -> [N*L, C]``). **Flatten** (``nn.Flatten``,
    ``torch.flatten``, ``view``/``reshape`` to ``[N, -1]``) of ``[N, C, H, W]`` maps channel
    ``c`` to the ``H*W`` consecutive features ``c*H*W ... (c+1)*H*W - 1`` of the following
    Linear. The size a ``view``/``reshape`` gives the channel dim must follow the channels
    (:func:`sizes_follow`): a constant there (``view(-1, 512 * 7 * 7)``) is a barrier."""
    si, so = tr.shape(src), tr.shape(node)
    d = tr.cd(src)
    if si is None or so is None or len(si) < 2:
        return tr.barrier(node, [src])
    si, so = list(si), list(so)
    fixed = "a view/reshape whose channel size is a constant or another tensor's (it would not shrink)"
    if so[:d + 1] == si[:d + 1]:  # the dims up to the channels are unchanged
        if not sizes_follow(tr, node, src, d):
            return tr.barrier(node, [src], fixed)
        tr.cdim[node] = d
        return tr.info[src]
    tail = len(si) - d  # the channels and the dims after them unchanged, leading dims reshaped
    if len(so) >= tail and so[len(so) - tail:] == si[d:] and len(so) - tail >= 1:
        if not sizes_follow(tr, node, src, len(so) - tail):
            return tr.barrier(node, [src], fixed)
        tr.cdim[node] = len(so) - tail
        return tr.info[src]
    if d >= 1 and len(so) == d + 1 and so[:d] == si[:d] and so[d] == math.prod(si[d:]):
        if not sizes_follow(tr, node, src, d, flattened=True):
            return tr.barrier(node, [src], fixed)
        hw = math.prod(si[d + 1:])  # the channels and everything after them flattened
        tr.cdim[node] = d
        return [(sid, rep * hw, idx) for sid, rep, idx in tr.info[src]]
    return None if quiet else tr.barrier(node, [src])


def _sizes(node) -> list | None:
    """The explicit sizes of a ``view``/``reshape`` (``None`` for flatten/squeeze/unsqueeze)."""
    name = getattr(node.target, "__name__", node.target)
    if name not in ("view", "reshape"):
        return None
    sizes = list(node.args[1:]) + ([node.kwargs["shape"]] if "shape" in node.kwargs else [])
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    return sizes


def same_channels_as(tr, arg, src, direct_only: bool = True) -> bool:
    """Whether the int ``arg`` is the channel count of a tensor (``t.shape[c]``, or computed from
    one when not ``direct_only``) that must keep ``src``'s channels; the compacted model then reads
    the shrunk count, as it should. Whether ``t`` and ``src`` end in the same group (or a gate that
    follows it) is known only after the walk: :meth:`ChannelTracer.run` checks the claim then, and
    keeps both groups' channels if it fails."""
    read = tr.size_reads.get(arg) if isinstance(arg, fx.Node) else None
    if read is None or (direct_only and not read[1]) or not tr.whole(src):
        return False
    tr.size_claims.append((arg, src))
    return True


def sizes_follow(tr, node, src, od: int, flattened: bool = False) -> bool:
    """Whether the compacted model's ``view``/``reshape`` of ``src`` will size its channel dim ``od``
    by the channels it has: the size given there is ``-1``, or the channel count of ``src`` (or of a
    tensor with the same channels: ``src.shape[1]``, ``t.size(-1)``). A constant
    (``view(-1, 512 * 7 * 7)``) or another tensor's count (MaxViT's ``reshape(B, G, P, D)`` with ``D``
    read from the block's input) would not follow the channels: they are then kept. Flatten,
    squeeze and unsqueeze always follow."""
    sizes = _sizes(node)
    if sizes is None:
        return True
    if od >= len(sizes):
        return False
    arg = sizes[od]
    if arg == -1:
        return True
    if not flattened and same_channels_as(tr, arg, src):
        tr.accepted.setdefault(node, set()).add(arg)
        return True
    return False


def reshape(tr, node, args):
    """``flatten``/``view``/``reshape``/``squeeze``/``unsqueeze``: :func:`keep_channels`, else
    a channel dim split in several (:func:`unflatten`, a channel shuffle)."""
    if not (len(args) == 1 and node.args and node.args[0] is args[0]):
        return tr.barrier(node, args)
    out = keep_channels(tr, node, args[0], quiet=True)
    return out if out is not None else unflatten(tr, node, args[0])


def flatten_module(tr, node, args):
    """``nn.Flatten`` (to the last dim): as :func:`keep_channels`."""
    if tr.modules[node.target].end_dim != -1:
        return tr.barrier(node, args)
    return keep_channels(tr, node, args[0])


def unflatten(tr, node, src):
    """A **channel shuffle** (ShuffleNet: ``view(N, g, C/g, H, W)``, ``transpose(1, 2)``,
    ``view(N, C, H, W)``): a view that splits the channel dim into factors, with exactly one
    factor computed at run time (``C // g``) and the others constants (``g``), is followed
    through permutes/transposes/``contiguous`` until a view merges the factors back; the
    channels then sit in the permuted order. The compacted model splits its own channels by
    the same constant ``g``, so the ``g`` channels that share an index of the run-time factor
    (those the shuffle interleaves) are *tied*: **rule:** kept all together if the vote keeps
    any of them (the union rule again). A ShuffleNetV2 thus compacts with every conv pruned,
    but independent per-layer masks rarely agree on a tied set (each stride-1 unit ties the
    passed-through half to the new branch), so the shuffled channels mostly stay: prune them
    consistently to remove them. A shuffle whose sizes are all constants is unsupported."""
    si, so = list(tr.shape(src)), list(tr.shape(node))
    if src in tr.factored:
        segs, P, dims = tr.factored[src]
        d0, k = dims[0], len(dims)
        if (dims == list(range(d0, d0 + k)) and so[:d0] == si[:d0] and len(so) == len(si) - k + 1
                and so[d0] == P.numel() and so[d0 + 1:] == si[d0 + k:]):
            pos = tr.positions(segs)
            tr.cdim[node] = d0
            return tr.segments([pos[i] for i in P.flatten().tolist()])
        return tr.barrier(node, [src])
    d = tr.cd(src)
    k = len(so) - len(si) + 1
    sizes = list(node.args[1:])
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    if (k < 2 or so[:d] != si[:d] or math.prod(so[d:d + k]) != si[d] or so[d + k:] != si[d + 1:]
            or not tr.unit(src) or len(sizes) != len(so)):
        return tr.barrier(node, [src])
    # The compacted model must be able to view its channels the same way: the factors given
    # as constants (a shuffle's ``groups``) stay, so exactly one factor may shrink -- the
    # channels that share its index are kept or removed together (a tie).
    dynamic = [a for a in range(k) if not isinstance(sizes[d + a], int) or sizes[d + a] == -1]
    if len(dynamic) != 1:
        return tr.barrier(node, [src], "a view that splits the channels with no single size "
                          "computed at run time (e.g. a channel shuffle with hard-coded sizes)")
    if same_channels_as(tr, sizes[d + dynamic[0]], src, direct_only=False):
        tr.accepted.setdefault(node, set()).add(sizes[d + dynamic[0]])
    P = torch.arange(si[d]).view(so[d:d + k])
    pos = tr.positions(tr.info[src])
    for j in range(so[d + dynamic[0]]):
        tie = P.select(dynamic[0], j).flatten().tolist()
        if len(tie) > 1:
            tr.ties.append([pos[i] for i in tie])
    tr.factored[node] = (tr.info[src], P, list(range(d, d + k)))
    return tr.info[src]


def refactor(tr, node, src):
    """``permute``/``transpose``/``contiguous`` of a tensor whose channel dim is split."""
    segs, P, dims = tr.factored[src]
    name = getattr(node.target, "__name__", node.target)
    if name in ("contiguous", "clone", "detach"):
        tr.factored[node] = tr.factored[src]
        return segs
    n = len(tr.shape(src))
    rest = list(node.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not rest or not all(isinstance(r, int) for r in rest):
        return tr.barrier(node, [src])
    if name == "permute":
        perm = [r % n for r in rest]
    elif len(rest) == 2:
        perm = list(range(n))
        a, b = (r % n for r in rest)
        perm[a], perm[b] = b, a
    else:
        return tr.barrier(node, [src])
    if sorted(perm) != list(range(n)):
        return tr.barrier(node, [src])
    new = [perm.index(dd) for dd in dims]  # where each axis of P goes
    order = sorted(range(len(dims)), key=lambda a: new[a])
    tr.factored[node] = (segs, P.permute(order), sorted(new))
    return segs


def on_factored(tr, node, src, args):
    """A node reading a split channel dim: a view merging it back, or a permute of it; anything
    else is a barrier."""
    fn, t = node.op == "call_function", node.target
    if len(args) == 1 and node.args and node.args[0] is src:
        if (fn and t in _FUNCTIONS) or (node.op == "call_method" and t in _METHODS):
            return unflatten(tr, node, src)
        if (fn and t in (torch.permute, torch.transpose, torch.swapaxes, torch.swapdims)) or (
                node.op == "call_method" and t in _PERMUTES):
            return refactor(tr, node, src)
    return tr.barrier(node, args, "an operation on split channels channel surgery has no rule for")


register_rule(_FUNCTIONS, reshape)
register_rule(_METHODS, reshape)
register_rule(nn.Flatten, flatten_module)

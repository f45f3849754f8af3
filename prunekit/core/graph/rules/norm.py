"""Norms: BatchNorm (per channel) and norms across the channels (LayerNorm, RMSNorm, GroupNorm)."""

from __future__ import annotations

import inspect

import torch
from torch import fx, nn

from .. import ops
from . import register_rule

__all__ = ["batchnorm", "channel_norm", "kept_channel_norm", "KeptNormReference"]

F = nn.functional


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


_SIGNATURES = {f: inspect.signature(f) for f in (F.layer_norm, F.rms_norm)}


def _bound(node: fx.Node) -> dict:
    try:
        return _SIGNATURES[node.target].bind(*node.args, **node.kwargs).arguments
    except (KeyError, TypeError):
        return {}


def channel_norm(tr, node, args):
    """**LayerNorm and RMSNorm over the channels** (``normalized_shape == (C,)`` with the
    channels in the last dim: ``nn.LayerNorm`` on ``[N, L, C]`` or channels-last ``[N, H, W, C]``,
    the functional ``layer_norm`` of torchvision's ``LayerNorm2d``) are *members* of the group:
    their ``weight`` and ``bias`` lose the same channels, and the output is the same space.
    A LayerNorm normalises *across* the channels, so a removed channel changes the others'
    mean and variance; the group's semantics is therefore a **norm over the kept channels**:
    the removed (zero) channels are left out of the statistics and its output there is zero
    (:func:`kept_channel_norm`), which is exactly what the compacted, narrower LayerNorm
    computes. So ConvNeXt's and ViT's residual streams are groups like a ResNet's.

    **GroupNorm, LocalResponseNorm**, and LayerNorms over more dims than the channels, stay
    *barriers*: the channels that reach them are kept."""
    first = node.args[0] if node.args else None
    if node.op != "call_module" and (first not in args or first in tr.consts):
        return tr.barrier(node, args)
    src = first if node.op != "call_module" else args[0]
    shape = tr.shape(src)
    member = shape is not None and tr.unit(src) and tr.cd(src) == len(shape) - 1
    params: list[str] = []
    if node.op == "call_module":
        m = tr.modules[node.target]
        member = member and isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and tuple(m.normalized_shape) == (shape[-1],)
        params = [f"{node.target}.{p}" for p in ("weight", "bias") if getattr(m, p, None) is not None]
        owner = node.target
    else:
        bound = _bound(node)
        ns = bound.get("normalized_shape")
        member = member and node.target in (F.layer_norm, F.rms_norm) and isinstance(ns, (tuple, list)) \
            and tuple(ns) == (shape[-1],)
        owner = None
        for key in ("weight", "bias"):
            p = bound.get(key)
            if p is None:
                continue
            if not (isinstance(p, fx.Node) and p.op == "get_attr"):
                member = False
                break
            params.append(p.target)
            owner = p.target.rpartition(".")[0]
        if owner is None:
            stack = node.meta.get("nn_module_stack") or {}
            owner = next(reversed(stack.values()))[0] if stack else None
            owner = owner if isinstance(owner, str) else None
    if not member or any(p in tr.attr_in for p in params):
        tr.barrier(node, [src], "normalisation over the channels and other dims (GroupNorm, or a LayerNorm "
                   "over more than the channels): a removed channel changes the others' statistics",
                   output=False)
        tr.cdim[node] = tr.cd(src)
        return tr.info[src]
    for p in params:
        tr.member_param(p, 0, src)
    for sid, *_ in tr.info[src]:
        tr.space(sid).norms.append(node.name)
    tr.norm_in[node] = (len(shape) - 1, tr.info[src])
    tr.norm_owner[node] = owner
    tr.cdim[node] = tr.cd(src)
    return tr.info[src]


def kept_channel_norm(x: torch.Tensor, kept: torch.Tensor, dim: int, weight, bias, eps, rms: bool) -> torch.Tensor:
    """LayerNorm (``rms=False``) or RMSNorm of ``x`` over the channels ``kept`` of dim ``dim``
    only; zero at the other channels. ``weight``/``bias`` are the full per-channel parameters."""
    idx = kept.to(x.device)
    xs = x.index_select(dim, idx)
    w = None if weight is None else weight.index_select(0, idx)
    if rms:
        y = F.rms_norm(xs, (len(idx),), w, eps)
    else:
        b = None if bias is None else bias.index_select(0, idx)
        y = F.layer_norm(xs, (len(idx),), w, b, eps)
    return torch.zeros_like(x).index_copy(dim, idx, y)


class _KeptNorms(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, norm_index: dict):
        super().__init__(gm)
        self.norm_index = norm_index

    def run_node(self, n: fx.Node):
        if n.name not in self.norm_index:
            return super().run_node(n)
        dim, kept, _ = self.norm_index[n.name]
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            m = self.module.get_submodule(n.target)
            rms = isinstance(m, nn.RMSNorm)
            return kept_channel_norm(args[0], kept, dim, m.weight, getattr(m, "bias", None), m.eps, rms)
        bound = _SIGNATURES[n.target].bind(*args, **kwargs).arguments
        rms = n.target is F.rms_norm
        eps = bound.get("eps", None if rms else 1e-5)
        return kept_channel_norm(bound["input"], kept, dim, bound.get("weight"), bound.get("bias"), eps, rms)


class KeptNormReference(nn.Module):
    """A model's fx graph, run with its channel norms normalising over the kept channels only
    (``norm_index``: node name -> (channel dim, kept indices, size)); the reference that
    :func:`prunekit.compact` equals when a LayerNorm-like norm loses channels."""

    def __init__(self, model: nn.Module, graph: fx.Graph, norm_index: dict):
        super().__init__()
        import copy
        self.gm = fx.GraphModule(model, copy.deepcopy(graph))
        self.norm_index = norm_index

    def forward(self, *args):
        return _KeptNorms(self.gm, self.norm_index).run(*args)


register_rule(ops.BATCHNORMS, batchnorm)
register_rule(ops.CHANNEL_NORM_MODULES, channel_norm)
register_rule(tuple(ops.CHANNEL_NORM_FUNCTIONS), channel_norm)

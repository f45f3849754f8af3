"""Compact: turn channel masks into a physically smaller model.

:func:`compact` takes a model whose Conv/Linear weights carry channel masks (the
``torch.nn.utils.prune`` reparametrisation ``weight_orig`` + ``weight_mask``, e.g. from
``pk.prune(model, 0.5, granularity="channel", example_inputs=x)``) and returns a *new* model
(a deep copy; the input is untouched) whose layers are really smaller, so its parameter
count and MACs drop -- the "universal speedup" of structured pruning.

The channel groups and the channels each keeps come from
:func:`prunekit.core.graph.plan_channels` (one ``torch.fx`` trace, one rule per construct:
:mod:`prunekit.core.graph.rules`). Removing a channel deletes it from every member of its
group: the producers' rows and biases, the BatchNorm entries (``weight``, ``bias``,
``running_mean``, ``running_var``), depthwise filters, per-channel parameters (layer scale,
class token, position embedding, LayerNorm weight and bias) and the consumers' input
columns. Masks that are not channel-structured (scattered zeros) stay as plain zeros in the
compacted weights; the compacted model has no masks and no hooks.

Semantics of a removed channel (read this)
------------------------------------------
A masked filter outputs zeros, but the masked model does *not* output zeros on that
channel when a conv bias or a BatchNorm follows: BatchNorm turns the zero into the
constant ``beta - gamma * running_mean / sqrt(running_var + eps)``, which then flows
into the next layer (and, through zero padding, differently at the borders). Removing
the channel removes that constant too. That is what "removing a filter" means in
Torch-Pruning and in the filter-pruning literature (Li et al. 2017; Liu et al. 2017):
the channel, its bias and its BatchNorm entry go together. So the contract is

    ``compact(model, x)(y) == zero_removed_channels(model, x)(y)``

(up to float rounding), where :func:`zero_removed_channels` sets, for every channel
that :func:`compact` removes, the producers' and depthwise convs' bias entries, the
group's BatchNorm ``weight``, ``bias`` and ``running_mean`` entries, and the entries of
its additive per-channel parameters (class token, position embedding) to zero, so the
masked model really outputs zero on it. When those entries are already zero -- no
biases, and freshly initialised BatchNorm or BatchNorm without a learned shift -- the
compacted model equals the masked model as it is.

A norm *across* the channels (LayerNorm, RMSNorm) over a group that loses channels is
read as normalising over the **kept channels only**: the removed channels are zero and
are left out of the mean and variance, and its output there is zero. That is exactly what
the compacted, narrower LayerNorm computes. :func:`zero_removed_channels` returns, for such
a model, the ``torch.fx.GraphModule`` of the model with those norms replaced by
kept-channel norms (:func:`prunekit.core.graph.rules.norm.kept_channel_norm`); for every
other model, a model of the model's own class. (GroupNorm and LocalResponseNorm stay
barriers.)

:func:`compact` checks its own result against this reference on ``example_inputs`` (in
eval mode) and raises ``RuntimeError`` if they differ, so it never returns a silently wrong
model. Channels that cannot be removed exactly (they reach a construct no rule follows:
attention, GroupNorm, an unknown module) are kept, with a ``UserWarning`` naming the
group and the construct (:class:`prunekit.core.graph.ChannelPlan` ``.blocked``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from ..core.graph.channels import ChannelPlan, _plan
from ..core.graph.trace import as_args, check_inputs, trace
from ..core.masks import copy_model
from ..core.graph import ops

__all__ = ["compact", "zero_removed_channels"]


def _gone(index: torch.Tensor, size: int) -> torch.Tensor:
    gone = torch.ones(size, dtype=torch.bool)
    gone[index] = False
    return gone


def _owner(name: str, modules: dict, root: nn.Module | None) -> nn.Module:
    owner = name.rpartition(".")[0]
    return root.get_submodule(owner) if root is not None else modules[owner]


def _zero(plan: ChannelPlan, modules: dict, root: nn.Module | None = None) -> None:
    """Zero what a removed channel still carries: biases, BatchNorm shifts, per-channel parameters."""
    with torch.no_grad():
        for name, idx in plan.out_index.items():  # producers and depthwise convs: biases
            b = getattr(modules[name], "bias", None)
            if b is not None:
                b[_gone(idx, b.shape[0]).to(b.device)] = 0
        for name, idx in plan.bn_index.items():
            bn = modules[name]
            gone = _gone(idx, bn.num_features)
            for t in (bn.weight, bn.bias, bn.running_mean):
                if t is not None:
                    t[gone.to(t.device)] = 0
        for name, (dim, idx) in plan.attr_index.items():  # class token, position embedding, norm weights
            t = getattr(_owner(name, modules, root), name.rpartition(".")[2])
            if t.shape[dim] != len(idx):
                t.index_fill_(dim, _gone(idx, t.shape[dim]).nonzero().flatten().to(t.device), 0)


def _run(model: nn.Module, example_inputs) -> list[torch.Tensor]:
    """Outputs of our own copy in eval mode without autograd; its modes and buffers (a user's
    counters) are restored. (Cheaper than :func:`prunekit.core.guards.read_only`, which also
    guards the parameters: this copy is ours.)"""
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(m._buffers, k, v, v.clone()) for m in model.modules() for k, v in m._buffers.items()
               if v is not None]
    try:
        model.eval()
        with torch.no_grad():
            out = model(*as_args(example_inputs))
    finally:
        for m, t in modes:
            m.training = t
        with torch.no_grad():
            for d, k, v, saved in buffers:
                d[k] = v
                if not torch.equal(v, saved):
                    v.copy_(saved)
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _reference(work: nn.Module, plan: ChannelPlan, model: nn.Module, example_inputs) -> nn.Module:
    """``work`` itself, or, if a norm across the channels loses channels, its fx graph with those
    norms normalising over the kept channels (see the module docstring)."""
    if not plan.norm_index:
        return work
    from ..core.graph.rules.norm import KeptNormReference
    return KeptNormReference(work, trace(model, example_inputs).gm.graph, plan.norm_index)


def zero_removed_channels(model: nn.Module, example_inputs, inplace: bool = False) -> nn.Module:
    """The masked model with the channels :func:`compact` removes made exactly zero.

    For every removed channel, the producers' and depthwise convs' bias entries, the
    group's BatchNorm ``weight``, ``bias`` and ``running_mean`` (gamma, beta, mean)
    entries and its per-channel parameters' entries are set to zero; masks and hooks stay.
    Returns a copy (``model`` untouched) unless ``inplace=True``. The result is the
    reference :func:`compact` equals; when a LayerNorm-like norm loses channels it is a
    ``torch.fx.GraphModule`` whose norms normalise over the kept channels (see the module
    docstring).
    """
    check_inputs(model, example_inputs)
    plan = _plan(model, example_inputs)
    work = model if inplace else copy_model(model, fold=False)
    _zero(plan, dict(work.named_modules()), work)
    return _reference(work, plan, model, example_inputs)


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    new = t.detach().index_select(dim, index.to(t.device)).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        setattr(module, name, new)


def _shrink_grouped(m: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor) -> None:
    """Slice a grouped conv: kept rows, and in each group the kept columns of its input part
    (every group keeps as many inputs and outputs as the others: see ``_balance``)."""
    g, w = m.groups, m.weight
    if len(out_idx) == m.out_channels and len(in_idx) == m.in_channels:
        return
    per_in = m.in_channels // g
    cols = in_idx.view(g, -1) - (torch.arange(g) * per_in)[:, None]  # local kept columns per group
    rows = out_idx
    idx = cols[rows // (m.out_channels // g)].to(w.device)  # [rows, kept per group]
    idx = idx.view(*idx.shape, *[1] * (w.dim() - 2)).expand(-1, -1, *w.shape[2:])
    new = torch.gather(w.detach()[rows.to(w.device)], 1, idx).clone()
    m.weight = nn.Parameter(new, requires_grad=w.requires_grad)
    _slice_param(m, "bias", out_idx, 0)
    m.out_channels, m.in_channels = len(out_idx), len(in_idx)


def _shrink(plan: ChannelPlan, modules: dict, root: nn.Module | None = None) -> None:
    for name, (dim, idx) in plan.attr_index.items():  # per-channel parameters (layer scale, tokens, norms)
        mod, attr = _owner(name, modules, root), name.rpartition(".")[2]
        t = getattr(mod, attr)
        if t.shape[dim] != len(idx):
            _slice_param(mod, attr, idx, dim)
    for owner, size in plan.norm_shapes.items():  # LayerNorm-like modules: the normalised width
        mod = root.get_submodule(owner) if root is not None else modules[owner]
        shape = getattr(mod, "normalized_shape", None)
        if isinstance(shape, (tuple, list)) and len(shape) == 1:
            mod.normalized_shape = (size,)
    for name, idx in plan.bn_index.items():
        bn = modules[name]
        if len(idx) == bn.num_features:
            continue
        for p in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(bn, p, idx, 0)
        bn.num_features = len(idx)
    for name in set(plan.out_index) | set(plan.in_index):
        m = modules[name]
        out_idx = plan.out_index.get(name)
        in_idx = plan.in_index.get(name)
        if name in plan.grouped:
            _shrink_grouped(m, out_idx, in_idx)
            continue
        if isinstance(m, ops.CONVS) and m.groups > 1:  # depthwise: input and output coupled
            if len(out_idx) != m.out_channels:
                _slice_param(m, "weight", out_idx, 0)
                _slice_param(m, "bias", out_idx, 0)
                m.in_channels = m.out_channels = m.groups = len(out_idx)
            continue
        if out_idx is not None and len(out_idx) != m.weight.shape[0]:
            _slice_param(m, "weight", out_idx, 0)
            _slice_param(m, "bias", out_idx, 0)
        if in_idx is not None and len(in_idx) != m.weight.shape[1]:
            _slice_param(m, "weight", in_idx, 1)
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape[0], m.weight.shape[1]
        else:
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1]


def _absmax(t: torch.Tensor) -> float:
    return float(t.abs().max()) if t.numel() else 0.0


def _warn_blocked(plan: ChannelPlan) -> None:
    if not plan.blocked:
        return
    lines = [f"group {i} (produced by {plan.groups[i]['producers']}): {n} channels, at {why}"
             for i, n, why in plan.blocked[:5]]
    more = f" (and {len(plan.blocked) - 5} more groups)" if len(plan.blocked) > 5 else ""
    warnings.warn(
        "compact kept channels that the masks remove, because they reach a construct channel surgery "
        "cannot follow (they stay, as zero rows): " + "; ".join(lines) + more
        + ". To remove them, prune with example_inputs (coupled groups skip these) or exclude the producers.",
        UserWarning, stacklevel=3)


def compact(model: nn.Module, example_inputs) -> nn.Module:
    """A physically smaller copy of a channel-masked ``model``; ``model`` is untouched.

    ``example_inputs`` (a tensor or a tuple of tensors) is used to trace shapes and to
    check the result. A channel is removed when every producer of its group masks its
    whole output row; the compacted model equals
    ``zero_removed_channels(model, example_inputs)`` -- the masked model
    with the removed channels' biases and BatchNorm gamma/beta/mean set to zero -- see the
    module docstring. The result is an ordinary model of the same class (no masks, no
    hooks); scattered (non-channel) masked weights are plain zeros in it. Masked channels
    that cannot be removed exactly are kept, with a ``UserWarning``.

    >>> import torch, torch.nn as nn, prunekit as pk
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> _ = pk.prune(model, 0.5, criterion="random", granularity="channel", scope="layer")
    >>> small = pk.compact(model, torch.randn(1, 8))
    >>> small[0].out_features, small[2].in_features, small[2].out_features
    (8, 8, 2)
    """
    check_inputs(model, example_inputs)
    plan = _plan(model, example_inputs)
    work = copy_model(model, fold=True)
    modules = dict(work.named_modules())
    _zero(plan, modules, work)
    reference = _run(_reference(work, plan, model, example_inputs), example_inputs)
    _shrink(plan, modules, work)
    try:
        result = _run(work, example_inputs)
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"compact: the compacted model fails on example_inputs ({type(e).__name__}: {e}); "
            "a hard-coded shape in forward() (e.g. view(-1, 512 * 7 * 7)) is not supported"
        ) from e
    if len(result) != len(reference) or any(
        r.shape != o.shape or not torch.allclose(r, o, rtol=1e-4, atol=1e-4 * max(1.0, _absmax(r)))
        for r, o in zip(reference, result)
    ):
        raise RuntimeError(
            "compact: the compacted model's outputs differ from the masked reference on example_inputs; "
            "the model contains a construct compact mishandles -- please report it"
        )
    _warn_blocked(plan)
    return work



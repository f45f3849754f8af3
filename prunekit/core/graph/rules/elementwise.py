"""Per-channel operations with ``f(0) = 0``, pooling, and reductions: the channels pass unchanged."""

from __future__ import annotations

import torch

from .. import ops
from . import register_rule


def passthrough(tr, node, args):
    """Activations with ``f(0) = 0`` (ReLU, ReLU6, LeakyReLU, GELU, SiLU, ELU, Tanh, Hardswish,
    Hardtanh, Mish), dropout, identity, ``contiguous``/``clone``/``detach`` and stochastic
    depth (identity in eval, whole samples zeroed in training) pass a space through
    unchanged; pooling (max, average, adaptive) and upsampling work on the dims after the
    channels, so they need the channels at dim 1. Sigmoid-like gates (``f(0) != 0``) pass
    here too, but their output is a *gate* (:mod:`.gate`): nonzero on removed channels, it may
    only multiply data."""
    if node.op != "call_module" and not (len(args) == 1 and node.args and node.args[0] is args[0]):
        return tr.barrier(node, args)
    kind = ops.kind_of(node, tr.modules)
    return tr.passthrough(node, args[0], spatial=kind is not None and kind.spatial_only)


def reduction(tr, node, args):
    """``mean``/``sum``/``amax`` over dims other than the batch and the channels keep the
    channels (their dim moves if the reduced dims before it are dropped)."""
    first = node.args[0] if node.args else None
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = [dims] if isinstance(dims, int) else dims
    shape = tr.shape(args[0]) if args else None
    if (len(args) == 1 and first is args[0] and dims is not None and shape is not None
            and all(isinstance(dd, int) for dd in dims)):
        d, n = tr.cd(first), len(shape)
        dims = [dd % n for dd in dims]
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if d not in dims and 0 not in dims:
            tr.cdim[node] = d if keep else d - sum(dd < d for dd in dims)
            return tr.info[first]
    return tr.barrier(node, args)


register_rule(tuple(ops.MODULES), passthrough)
register_rule(tuple(ops.MODULE_NAMES), passthrough, kind="module")
register_rule(tuple(ops.FUNCTIONS), passthrough)
register_rule(tuple(ops.FUNCTION_NAMES), passthrough, kind="function")
register_rule(tuple(ops.METHODS), passthrough)
register_rule((torch.mean, torch.amax, torch.sum), reduction)
register_rule(("mean", "amax", "sum"), reduction)

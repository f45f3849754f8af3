"""Questions about a model's graph: what follows a layer, and what feeds it.

All of them read the one cached trace of :func:`prunekit.core.graph.trace.structure` (no
inputs needed) and the one op table of :mod:`prunekit.core.graph.ops`, instead of tracing
the model again with their own tables. Each keeps its caller's documented behaviour on a
model that ``torch.fx`` cannot trace.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from ..targets import Target
from . import ops
from .trace import structure

__all__ = ["following", "following_batchnorm", "following_relu", "next_layers", "producers", "consumers"]


def _calls(graph: fx.Graph) -> dict[str, list[fx.Node]]:
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    return calls


def following(model: nn.Module, name: str, types: type | tuple[type, ...]) -> nn.Module | None | bool:
    """The module of type ``types`` that is the *only* user of module ``name``'s output, if
    ``name`` is called once; ``None`` if there is none; ``False`` if the model cannot be traced."""
    graph = structure(model)
    if graph is None:
        return False
    nodes = _calls(graph).get(name, [])
    if len(nodes) != 1:
        return None
    users = list(nodes[0].users)
    if len(users) == 1 and users[0].op == "call_module":
        m = model.get_submodule(users[0].target)
        if isinstance(m, types):
            return m
    return None


def producers(model: nn.Module, name: str) -> list[str]:
    """The modules whose outputs module ``name`` reads directly (through no other call), by name."""
    graph = structure(model)
    if graph is None:
        return []
    out = []
    for node in _calls(graph).get(name, []):
        for a in node.all_input_nodes:
            if a.op == "call_module":
                out.append(a.target)
    return list(dict.fromkeys(out))


def consumers(model: nn.Module, name: str) -> list[str]:
    """The modules that read module ``name``'s output directly, by name."""
    graph = structure(model)
    if graph is None:
        return []
    out = [u.target for node in _calls(graph).get(name, []) for u in node.users if u.op == "call_module"]
    return list(dict.fromkeys(out))


def following_batchnorm(model: nn.Module, targets: list[Target]) -> dict[str, nn.Module | None]:
    """For each target, the BatchNorm that directly consumes its module's output, or ``None``.

    The BatchNorm is the only user of the layer's output (``conv -> bn``, as in VGG-style
    ``Sequential`` s and ResNet blocks, including the ``downsample`` shortcut), with the
    layer's width. If the model cannot be traced, the next leaf module in registration order is
    used when it is a BatchNorm with matching width (the documented fallback; it is right for
    ``Sequential`` models and torchvision-style blocks).
    """
    names = {id(m): n for n, m in model.named_modules()}
    graph = structure(model)
    calls = _calls(graph) if graph is not None else None
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    result: dict[str, nn.Module | None] = {}
    for t in targets:
        mname = names.get(id(t.module), "")
        width = t.shape[0] if len(t.shape) else 1
        bn = None
        if calls is not None:
            if mname in calls:
                users = list(calls[mname][0].users)
                if len(users) == 1 and users[0].op == "call_module":
                    cand = model.get_submodule(users[0].target)
                    bn = cand if isinstance(cand, ops.BATCHNORMS) else None
        else:
            idx = next((i for i, (n, _) in enumerate(leaves) if n == mname), None)
            if idx is not None and idx + 1 < len(leaves) and isinstance(leaves[idx + 1][1], ops.BATCHNORMS):
                bn = leaves[idx + 1][1]
        if bn is not None and bn.num_features != width:
            bn = None
        result[t.name] = bn
    return result


def following_relu(model: nn.Module, sites: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """For each site module, the ``nn.ReLU`` module that is its only consumer (both called only
    once in the model); else the site itself (also when the model cannot be traced)."""
    out = dict(sites)
    graph = structure(model)
    if graph is None:
        return out
    names = {id(m): n for n, m in model.named_modules()}
    calls = _calls(graph)
    for key, site in sites.items():
        nodes = calls.get(names.get(id(site)), [])
        if len(nodes) != 1:
            continue
        users = list(nodes[0].users)
        if len(users) == 1 and users[0].op == "call_module" and len(calls.get(users[0].target, [])) == 1:
            nxt = model.get_submodule(users[0].target)
            if isinstance(nxt, nn.ReLU):
                out[key] = nxt
    return out


# --- ThiNet's "next layer" -----------------------------------------------------------------

def _conv_ok(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros" and \
        not (isinstance(m.padding, str) and m.padding != "valid")


def _flatten_from_1(node: fx.Node) -> bool:
    if node.op == "call_module":
        return False
    args = list(node.args[1:]) + ([node.kwargs["start_dim"]] if "start_dim" in node.kwargs else [])
    end = node.kwargs.get("end_dim", node.args[2] if len(node.args) > 2 else -1)
    return len(args) >= 1 and args[0] == 1 and end == -1


def _chain_step(node: fx.Node, modules: dict, conv_input: bool, flattened: bool):
    """Classify ``node`` (the single user of the previous node): ("pass", flattened') to go on,
    ("consumer", name) at a Linear/Conv2d, or None to stop. Per-channel ops pass (any
    :class:`~prunekit.core.graph.ops.OpKind` that is ``per_channel``; those that are
    ``spatial_only``, and BatchNorm2d, only on a conv's unflattened output; BatchNorm1d only
    after a Linear)."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.Linear):
            return ("consumer", node.target)
        if isinstance(m, nn.Conv2d):
            return ("consumer", node.target) if (conv_input and not flattened and _conv_ok(m)) else None
        if isinstance(m, nn.Flatten):
            ok = conv_input and not flattened and m.start_dim == 1 and m.end_dim == -1
            return ("pass", True) if ok else None
        if isinstance(m, nn.BatchNorm1d):
            return ("pass", flattened) if not conv_input else None
        if isinstance(m, nn.BatchNorm2d):
            return ("pass", flattened) if conv_input and not flattened else None
    elif node.op in ("call_function", "call_method"):
        if conv_input and not flattened and (node.target is torch.flatten or node.target == "flatten") \
                and _flatten_from_1(node):
            return ("pass", True)
    else:
        return None
    kind = ops.kind_of(node, modules)
    if kind is None or not kind.per_channel:
        return None
    if kind.spatial_only:
        return ("pass", flattened) if conv_input and not flattened else None
    return ("pass", flattened)


def next_layers(model: nn.Module, targets: list[Target] | None = None) -> dict[str, str | None]:
    """``{weight name: module name of layer i+1 or None}`` for the targets (default: all Linear
    and Conv weights), following single-user chains of per-channel operations in the
    :func:`torch.fx.symbolic_trace` graph. ``None``: no such layer (and for every target when
    the model cannot be traced)."""
    from ..targets import find_targets

    targets = find_targets(model) if targets is None else targets
    out: dict[str, str | None] = {t.name: None for t in targets}
    graph = structure(model)
    if graph is None:
        return out
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    calls = _calls(graph)
    for t in targets:
        if t.attr != "weight" or not isinstance(t.module, (nn.Linear, nn.Conv2d)):
            continue
        nodes = calls.get(names.get(id(t.module)), [])
        if len(nodes) != 1:
            continue
        conv_input = isinstance(t.module, nn.Conv2d)
        if conv_input and t.module.groups != 1:
            continue
        cur, flattened = nodes[0], False
        while True:
            users = list(cur.users)
            if len(users) != 1:
                break
            user = users[0]
            if not user.args or user.args[0] is not cur:
                break
            step = _chain_step(user, modules, conv_input, flattened)
            if step is None:
                break
            if step[0] == "consumer":
                consumer = modules[step[1]]
                if isinstance(consumer, nn.Linear):
                    # a Linear reads its last dim: a conv's channels must have been flattened into it
                    if conv_input and (not flattened or consumer.in_features % t.shape[0]):
                        break
                    if not conv_input and consumer.in_features != t.shape[0]:
                        break
                out[t.name] = step[1]
                break
            flattened = step[1]
            cur = user
    return out

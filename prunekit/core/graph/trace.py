"""One ``torch.fx`` trace per model, with every node's shape.

:func:`trace` traces a model with :func:`torch.fx.symbolic_trace` and runs
:class:`torch.fx.passes.shape_prop.ShapeProp` on ``example_inputs``, in eval mode and
without autograd; the model is left exactly as it was (:func:`prunekit.core.guards.read_only`:
modes, values, masks). :func:`structure` traces without inputs (no shapes), for the
queries of :mod:`prunekit.core.graph.queries`.

Both are cached per model (a weak reference: the cache dies with the model). An entry is
reused only while the model has the same modules (the same objects, under the same
names, with the same hyperparameters as ``extra_repr`` shows them), the same parameter
shapes, the same masked parameters in modules that the trace goes *into* (a ``torch.nn`` layer is a leaf, so masking a Conv or Linear does not change
the graph), and, for :func:`trace`, inputs of the same shapes, dtypes and devices. So
``pk.prune(..., example_inputs=x)`` and then ``pk.compact(model, x)`` trace once.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..guards import example_inputs_fit, read_only
from ..targets import pruning_hooks

__all__ = ["Traced", "trace", "structure", "check_inputs", "as_args", "clear_cache"]


@dataclass
class Traced:
    """A traced model: its fx graph (``gm``), ``modules`` by name, and per-analysis memos.

    ``memo`` holds what analyses derive from the graph alone (the channel spaces of
    :mod:`prunekit.core.graph.channels`), so they are computed once per trace too.
    """

    gm: fx.GraphModule
    modules: dict[str, nn.Module]
    memo: dict = field(default_factory=dict)


_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_STRUCTURES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def clear_cache() -> None:
    """Forget every cached trace (e.g. after patching a model's ``forward``)."""
    _TRACES.clear()
    _STRUCTURES.clear()


def as_args(example_inputs) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def check_inputs(model: object, example_inputs: object) -> None:
    """``TypeError`` unless ``model`` is a module and ``example_inputs`` a tensor or a tuple of tensors."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    ok = isinstance(example_inputs, torch.Tensor) or (
        isinstance(example_inputs, tuple) and all(isinstance(x, torch.Tensor) for x in example_inputs))
    if not ok:
        raise TypeError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


def _is_leaf(m: nn.Module) -> bool:
    return (m.__module__.startswith("torch.nn") or m.__module__.startswith("torch.ao.nn")) \
        and not isinstance(m, nn.Sequential)


def _signature(model: nn.Module) -> tuple:
    # the modules, their hyperparameters (stride, groups, normalized_shape ... via extra_repr)
    mods = tuple((n, id(m), type(m), m.extra_repr()) for n, m in model.named_modules())
    # a masked weight is ``weight_orig`` (torch.nn.utils.prune): the same parameter for the graph
    params = tuple(sorted((n.removesuffix("_orig"), tuple(p.shape), str(p.dtype)) for n, p in model.named_parameters()))
    masked = tuple(n for n, m in model.named_modules() if not _is_leaf(m) and pruning_hooks(m))
    forward = tuple(id(m.__dict__["forward"]) for m in model.modules() if "forward" in m.__dict__)
    from .rules import registry_version  # (a rule registered later changes what an analysis finds)
    return mods, params, masked, forward, registry_version()


def _fixed_defaults(model: nn.Module, n_args: int) -> dict[str, object] | None:
    """The parameters of ``model.forward`` after the ``n_args`` given ones whose default is
    ``None`` or a plain constant: traced as that constant (``torch.fx`` would otherwise trace
    e.g. ``if mask is not None`` as if a mask were given)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params[:n_args + 1]):
        return None
    fixed = {p.name: p.default for p in params[n_args:]
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
             and (p.default is None or type(p.default) in (bool, int, float, str))}
    return fixed or None


def _symbolic(model: nn.Module, n_args: int) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model, concrete_args=_fixed_defaults(model, n_args))
    except Exception as e:  # noqa: BLE001 - torch.fx raises many kinds of errors
        raise TypeError(
            f"torch.fx.symbolic_trace cannot trace {type(model).__name__} ({type(e).__name__}: {e}); "
            "following channels through a model (compact, prune with granularity='channel' and "
            "example_inputs) needs a model without data-dependent control flow"
        ) from e


def trace(model: nn.Module, example_inputs) -> Traced:
    """The fx graph of ``model`` (traced in eval mode) with every node's shape from one pass on
    ``example_inputs``; ``model`` is left exactly as it was. Cached (see the module docstring).

    ``example_inputs`` that the model does not accept raise a ``ValueError`` naming them; a
    model that cannot be traced, a ``TypeError``; a graph that fails where the model runs
    (control flow that tracing fixed), a ``ValueError``.
    """
    args = as_args(example_inputs)
    key = (_signature(model), tuple((tuple(a.shape), a.dtype, a.device) for a in args))
    hit = _TRACES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    with read_only(model):
        try:
            gm = _symbolic(model, len(args))
        except TypeError:
            with example_inputs_fit(model, example_inputs):  # shape, dtype, arity: a clear error first
                model(*args)
            raise
        required = [n for n in gm.graph.nodes if n.op == "placeholder" and not n.args]
        if len(required) != len(args):  # a wrong arity: the model's own error, as a ValueError
            with example_inputs_fit(model, example_inputs):
                model(*args)
        try:
            ShapeProp(gm).propagate(*args)
        except Exception as e:  # noqa: BLE001
            with example_inputs_fit(model, example_inputs):
                model(*args)
            raise ValueError(
                f"the torch.fx graph of {type(model).__name__} fails on example_inputs although the model "
                f"runs on them ({type(e).__name__}: {e}); its forward() likely branches on its inputs "
                "(control flow that tracing fixed), which channel surgery cannot follow"
            ) from e
    traced = Traced(gm, dict(gm.named_modules()))
    _TRACES[model] = (key, traced)
    return traced


def structure(model: nn.Module) -> fx.Graph | None:
    """The fx graph of ``model`` without shapes (no inputs needed), or ``None`` if it cannot be
    traced. Cached like :func:`trace`. The model is not modified (tracing runs no forward)."""
    key = _signature(model)
    hit = _STRUCTURES.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        modes = [(m, m.training) for m in model.modules()]
        try:
            graph = fx.symbolic_trace(model).graph
        finally:
            for m, t in modes:
                m.training = t
    except Exception:  # noqa: BLE001 - untraceable: the callers have their fallbacks
        graph = None
    _STRUCTURES[model] = (key, graph)
    return graph

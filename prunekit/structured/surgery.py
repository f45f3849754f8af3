"""Deprecated home of channel surgery, kept as a re-export.

The code now lives in :mod:`prunekit.core.graph` (tracing, channel spaces, the rules, the
planner) and :mod:`prunekit.structured.compact` (:func:`compact`,
:func:`zero_removed_channels`); the specification of each construct is the docstring of its
rule in :mod:`prunekit.core.graph.rules`.
"""

from ..core.graph.channels import ChannelPlan, _balance, _kept_rows, _plan, _settle, _shared_spaces, plan_channels
from ..core.graph.spaces import Space as _Space
from ..core.graph.trace import _fixed_defaults, check_inputs as _check_inputs
from ..core.graph.tracer import ChannelTracer as _Tracer
from ..core.masks import copy_model
from .compact import _shrink, _shrink_grouped, _slice_param, _zero, compact, zero_removed_channels

__all__ = ["compact", "zero_removed_channels", "plan_channels", "ChannelPlan"]


def _copy(model):
    """Deprecated: :func:`prunekit.core.masks.copy_model` (``fold=False``)."""
    return copy_model(model, fold=False)


def _trace(model, example_inputs):
    """Deprecated: :func:`prunekit.core.graph.trace`; returns ``(gm, modules)``."""
    from ..core.graph.trace import trace
    _check_inputs(model, example_inputs)
    t = trace(model, example_inputs)
    return t.gm, t.modules

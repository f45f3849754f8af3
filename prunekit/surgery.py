"""Deprecated path (kept for one release): channel surgery was split.

Tracing, channel spaces, the rules and the planner now live in :mod:`prunekit.core.graph`
(:func:`~prunekit.core.graph.channels.plan_channels`); physical removal in
:mod:`prunekit.structured.compact` (:func:`~prunekit.structured.compact.compact`,
:func:`~prunekit.structured.compact.zero_removed_channels`). Every old name, the private
helpers included, still resolves here.
"""

import importlib
import warnings

warnings.warn("prunekit.surgery has moved to prunekit.structured.compact (compact, zero_removed_channels) and "
              "prunekit.core.graph.channels (plan_channels, ChannelPlan); the old path is kept for one release "
              "and will then be removed", DeprecationWarning, stacklevel=2)

from .core.graph.channels import ChannelPlan, _balance, _kept_rows, _plan, _settle, _shared_spaces, plan_channels  # noqa: E402,F401
from .core.graph.spaces import Space as _Space  # noqa: E402,F401
from .core.graph.trace import _fixed_defaults, check_inputs as _check_inputs  # noqa: E402,F401
from .core.graph.tracer import ChannelTracer as _Tracer  # noqa: E402,F401
from .core.masks import copy_model  # noqa: E402,F401
from .structured.compact import _shrink, _shrink_grouped, _slice_param, _zero, compact, zero_removed_channels  # noqa: E402,F401


def _copy(model):
    """Deprecated: :func:`prunekit.core.masks.copy_model` (``fold=False``)."""
    return copy_model(model, fold=False)


def _trace(model, example_inputs):
    """Deprecated: :func:`prunekit.core.graph.trace`; returns ``(gm, modules)``."""
    from .core.graph.trace import trace
    _check_inputs(model, example_inputs)
    t = trace(model, example_inputs)
    return t.gm, t.modules


def __getattr__(name: str):
    return getattr(importlib.import_module("prunekit.structured.compact"), name)

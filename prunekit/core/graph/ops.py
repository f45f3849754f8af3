"""One classification of the operations that act on each channel separately.

Every place that walks a traced model (:mod:`prunekit.core.graph.rules` for channel
surgery, :mod:`prunekit.core.graph.queries` for ThiNet's "next layer", the BatchNorm or
ReLU after a layer) asks :func:`kind_of` what a node does, instead of keeping its own
table. An :class:`OpKind` has named properties:

* ``per_channel`` -- output channel ``c`` depends on input channel ``c`` only;
* ``zero_to_zero`` -- ``f(0) = 0``, so a removed (zero) channel stays zero (ReLU, GELU,
  pooling, dropout); a *gate* (sigmoid) is per-channel but not zero-to-zero;
* ``spatial_only`` -- it works on the dims after the channels (pooling, upsampling), so
  the channels must be dim 1 of ``[N, C, ...]``.

Reshapes, permutes, norms and products are not here: their rules need the shapes
(:mod:`prunekit.core.graph.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

__all__ = ["OpKind", "ACTIVATION", "GATE", "DROPOUT", "POOL", "IDENTITY", "MODULES", "FUNCTIONS", "METHODS",
           "MODULE_NAMES", "FUNCTION_NAMES", "kind_of", "module_kind", "BATCHNORMS", "CHANNEL_NORM_MODULES",
           "CHANNEL_NORM_FUNCTIONS", "CONVS"]

F = nn.functional


@dataclass(frozen=True)
class OpKind:
    """What an operation does to the channels (see the module docstring)."""

    name: str
    per_channel: bool = True
    zero_to_zero: bool = True
    spatial_only: bool = False

    @property
    def gate(self) -> bool:
        """Per-channel but nonzero at zero (sigmoid): allowed on a removed channel only as a gate."""
        return self.per_channel and not self.zero_to_zero


ACTIVATION = OpKind("activation")
GATE = OpKind("gate", zero_to_zero=False)
DROPOUT = OpKind("dropout")
CHANNEL_DROPOUT = OpKind("channel dropout", spatial_only=True)
POOL = OpKind("pooling", spatial_only=True)
IDENTITY = OpKind("identity")

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Norms *across* the channels (each output channel depends on all of them).
CHANNEL_NORM_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)
CHANNEL_NORM_FUNCTIONS = {F.layer_norm, F.group_norm, F.rms_norm, F.local_response_norm}

_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample)
_POOL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                   F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
                   F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate)

#: module type -> kind (looked up along the type's MRO, so subclasses count)
MODULES: dict[type, OpKind] = {
    **{t: ACTIVATION for t in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh,
                               nn.Hardswish, nn.Hardtanh, nn.Mish)},
    **{t: GATE for t in (nn.Sigmoid, nn.Hardsigmoid)},
    **{t: DROPOUT for t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)},
    nn.Identity: IDENTITY,
    **{t: POOL for t in _POOL_MODULES},
}
#: function object -> kind
FUNCTIONS: dict[object, OpKind] = {
    **{f: ACTIVATION for f in (torch.relu, F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, torch.tanh,
                               F.hardswish, F.hardtanh, F.mish)},
    **{f: GATE for f in (torch.sigmoid, F.sigmoid, F.hardsigmoid)},
    F.dropout: DROPOUT,
    **{f: CHANNEL_DROPOUT for f in (F.dropout1d, F.dropout2d, F.dropout3d)},
    **{f: POOL for f in _POOL_FUNCTIONS},
}
#: tensor method name -> kind
METHODS: dict[str, OpKind] = {
    "relu": ACTIVATION, "relu_": ACTIVATION, "tanh": ACTIVATION, "sigmoid": GATE,
    "contiguous": IDENTITY, "clone": IDENTITY, "detach": IDENTITY,
}
#: by class name / function name, for libraries that prunekit does not import (torchvision's
#: stochastic depth: identity in eval, whole samples zeroed in training -- a zero stays zero)
MODULE_NAMES: dict[str, OpKind] = {"StochasticDepth": DROPOUT}
FUNCTION_NAMES: dict[str, OpKind] = {"stochastic_depth": DROPOUT}



def module_kind(m: nn.Module) -> OpKind | None:
    """The kind of a module (by type along its MRO, then by class name), or ``None``."""
    for t in type(m).__mro__:
        if t in MODULES:
            return MODULES[t]
    return MODULE_NAMES.get(type(m).__name__)


def kind_of(node: fx.Node, modules: dict[str, nn.Module]) -> OpKind | None:
    """The :class:`OpKind` of an fx node (``call_module``, ``call_function``, ``call_method``), or ``None``."""
    if node.op == "call_module":
        return module_kind(modules[node.target])
    if node.op == "call_function":
        try:
            k = FUNCTIONS.get(node.target)
        except TypeError:  # unhashable target
            k = None
        return k if k is not None else FUNCTION_NAMES.get(getattr(node.target, "__name__", None))
    if node.op == "call_method":
        return METHODS.get(node.target)
    return None

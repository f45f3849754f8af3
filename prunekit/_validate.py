"""Argument checks shared by prunekit's training-style functions.

Each raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value, naming the
argument and what is allowed, so callers validate everything before touching a model.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from torch import nn

def check_model(model: Any) -> nn.Module:
    """``model`` itself, if it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_materialised(model: Any, *, allow_meta: bool = False) -> nn.Module:
    """``model`` itself, if it is an ``nn.Module`` whose parameters and buffers all exist.

    ``ValueError`` for an uninitialised lazy module (``nn.LazyLinear`` before its first
    forward pass: no shape yet) and, unless ``allow_meta``, for tensors on the meta device
    (shapes but no values, e.g. a model built under ``torch.device("meta")``). Only reads
    the model.
    """
    check_model(model)
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if nn.parameter.is_lazy(t):
                raise ValueError(f"model has an uninitialised (lazy) {kind} {name!r} (e.g. nn.LazyLinear before its "
                                 f"first forward pass): run one forward pass on a real batch first, so that its "
                                 f"shape is known")
            if t.is_meta and not allow_meta:
                raise ValueError(f"model has {kind} {name!r} on the meta device (a shape without values): "
                                 f"materialise the model first, e.g. model.to_empty(device='cpu') and then "
                                 f"load_state_dict(...)")
    return model


def check_nonneg(name: str, value: Any) -> float:
    """``value`` as a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    v = float(value)
    if not (v >= 0.0) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not (v > 0.0) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


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


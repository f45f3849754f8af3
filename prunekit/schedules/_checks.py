"""Argument checks shared by the schedules (``TypeError`` for a wrong type, ``ValueError`` for a
wrong value, each naming the argument)."""

from __future__ import annotations

import math
from numbers import Integral, Real


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """An ``int`` (NumPy integers too, never a ``bool``), at least ``minimum`` when given."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_fraction(name: str, value: object, *, closed: bool = False) -> float:
    """A real number in [0, 1) (or [0, 1] when ``closed``), never a ``bool``, NaN or infinity."""
    what = "[0, 1]" if closed else "[0, 1)"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number in {what}, got {value!r} of type {type(value).__name__}")
    try:
        v = float(value)
    except (OverflowError, ValueError):
        v = math.nan
    ok = 0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0  # False for NaN
    if not ok:
        raise ValueError(f"{name} must be a number in {what}, got {value!r}")
    return v

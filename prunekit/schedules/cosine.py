"""Cosine decay of RigL's drop fraction (Evci et al. 2020).

U. Evci, T. Gale, J. Menick, P. S. Castro and E. Elsen, "Rigging the lottery: making all tickets
winners", ICML 2020, eq. (1): f_decay(t; α, T_end) = α/2 · (1 + cos(π t / T_end)), the fraction
of active connections that dynamic sparse training drops (and regrows) at update step t.
"""

from __future__ import annotations

import math

from .._validate import check_fraction, check_int


def cosine_decay(step: int, *, initial: float, end_step: int) -> float:
    """``initial / 2 * (1 + cos(pi * step / end_step))`` for ``0 <= step < end_step``, ``0`` after.

    ``cosine_decay(0, ...) == initial`` and ``cosine_decay(end_step, ...) == 0.0`` exactly.

    Raises:
        TypeError: a non-int ``step``/``end_step``, a non-number ``initial``.
        ValueError: ``step < 0``, ``end_step < 1``, ``initial`` outside [0, 1].

    >>> cosine_decay(0, initial=0.3, end_step=100), cosine_decay(50, initial=0.3, end_step=100)
    (0.3, 0.15)
    """
    step = check_int("step", step, minimum=0)
    a = check_fraction("initial", initial, include_one=True)
    t_end = check_int("end_step", end_step, minimum=1)
    if step == 0:
        return a
    if step >= t_end:
        return 0.0
    return a / 2.0 * (1.0 + math.cos(math.pi * step / t_end))

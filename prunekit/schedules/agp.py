"""Automated gradual pruning (AGP): the cubic sparsity schedule of Zhu & Gupta (2018).

M. Zhu and S. Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR workshop 2018 (arXiv 1710.01878), eq. (1)::

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,   t = t0, t0 + dt, ..., t0 + n * dt

It prunes fast at first, while many redundant weights remain, and slowly near the end.
"""

from __future__ import annotations

from .._validate import check_fraction, check_int


def agp(step: int, *, final_sparsity: float, begin_step: int, end_step: int,
        initial_sparsity: float = 0.0, frequency: int = 1) -> float:
    """The AGP sparsity at ``step`` (Zhu & Gupta 2018, eq. 1).

    * ``step < begin_step``: ``initial_sparsity`` (s_i);
    * ``step >= end_step``: ``final_sparsity`` (s_f);
    * otherwise the value of the last update step ``t = begin_step + k * frequency <= step``:
      ``s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3``, i.e. the
      sparsity is held constant between update steps, as a mask that is only recomputed every
      ``frequency`` steps (Δt) is.

    Here n·Δt = ``end_step - begin_step``. When ``frequency`` does not divide it,
    ``end_step`` is still an update step (the last one), so s_f is always reached at
    ``end_step``. The endpoints are exact: ``agp(begin_step, ...) == initial_sparsity`` and
    ``agp(end_step, ...) == final_sparsity``; the schedule never decreases.

    Relation to ``torch.ao.pruning.scheduler.CubicSL(sparsifier, init_sl=s_i, init_t=begin_step,
    delta_t=frequency, total_t=n)`` with the sparsifier's ``sparsity_level`` = s_f: the two agree
    at every update step and outside [begin_step, end_step]; between update steps CubicSL
    evaluates the cubic at the step itself (its ``delta_t`` enters only through n·Δt), while
    ``agp`` holds the last update's value.

    Args:
        step: the training step (the number of optimiser steps taken), any int.
        final_sparsity, initial_sparsity: s_f and s_i in [0, 1), with s_i <= s_f.
        begin_step, end_step: t0 >= 0 and the last update step, ``end_step > begin_step``.
        frequency: Δt >= 1, steps between mask updates.

    Raises:
        TypeError: a non-int step or frequency, a non-number sparsity.
        ValueError: a sparsity outside [0, 1), ``initial_sparsity > final_sparsity``,
            ``begin_step < 0``, ``end_step <= begin_step``, ``frequency < 1``.

    >>> [round(agp(t, final_sparsity=0.8, begin_step=0, end_step=4), 4) for t in range(6)]
    [0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8]
    >>> round(agp(3, final_sparsity=0.8, begin_step=0, end_step=4, frequency=2), 4)  # held since step 2
    0.7
    """
    step = check_int("step", step)
    s_f = check_fraction("final_sparsity", final_sparsity)
    s_i = check_fraction("initial_sparsity", initial_sparsity)
    t0 = check_int("begin_step", begin_step, minimum=0)
    t_end = check_int("end_step", end_step)
    dt = check_int("frequency", frequency, minimum=1)
    if t_end <= t0:
        raise ValueError(f"end_step must be > begin_step ({t0}), got {t_end}")
    if s_i > s_f:
        raise ValueError(f"initial_sparsity ({s_i}) must be <= final_sparsity ({s_f}): AGP only prunes more")
    if step <= t0:
        return s_i
    if step >= t_end:
        return s_f
    t = t0 + (step - t0) // dt * dt  # the last update step
    if t == t0:
        return s_i
    s = s_f + (s_i - s_f) * (1.0 - (t - t0) / (t_end - t0)) ** 3
    return min(max(s, s_i), s_f)

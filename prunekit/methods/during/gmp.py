"""Gradual magnitude pruning (GMP) during training, on the AGP schedule.

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR workshop 2018 (arXiv 1710.01878): starting at step t0, every Δt steps the
weights of smallest magnitude are masked until the sparsity reaches the cubic schedule's value
s_t (:func:`prunekit.schedules.agp`); training goes on between updates, so the network recovers
from each small cut. A masked weight is zero in the forward pass and gets no gradient, so it is
ranked lowest at the next update and stays pruned: the masks are nested.

:class:`GradualPruner` is a training-loop callback in the spirit of ``torch.ao.pruning``'s
sparsifier + ``CubicSL`` scheduler pair: call it after each optimiser step, either as
``callback=`` of :func:`prunekit.train.train` (it receives a :class:`prunekit.train.StepInfo`)
or with :meth:`GradualPruner.step` in your own loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ...criteria import available, score
from ...pipeline import make_masks, prune
from ...schedules import agp
from ...train import StepInfo

__all__ = ["GradualPruner"]


class GradualPruner:
    """Prune ``model`` gradually to ``final_sparsity`` on the AGP schedule (Zhu & Gupta 2018).

    After optimiser step ``t`` (``t`` = the number of steps taken, as in
    :attr:`StepInfo.step` and ``torch.ao``'s ``scheduler.step()``) the target is
    ``agp(t, final_sparsity=..., begin_step=..., end_step=..., initial_sparsity=...,
    frequency=...)``; whenever it differs from the sparsity applied last, the masks are
    recomputed with :func:`prunekit.prune` -- ``criterion``, ``granularity``, ``scope``,
    ``include``/``exclude``, ``reduction`` and ``data`` as there -- and applied. As with
    ``prune``, the sparsity is the *total* fraction pruned, exactly ``round(s · N)`` units
    (see :func:`prunekit.make_masks`), and weights pruned before are ranked lowest and stay
    pruned, so after ``end_step`` exactly ``final_sparsity`` of the chosen parameters is
    masked. Until the first update the model is untouched (a zero target prunes nothing), and
    a target below the one applied (a step counter that restarts) changes nothing: it never
    un-prunes.

    Every argument is checked at construction (schedule values, the model, the criterion
    name, and the granularity and scope on placeholder scores at the smallest non-zero and the
    final sparsity of the schedule), so a bad one fails before training starts. Granularities
    with a fixed or bounded sparsity (``"N:M"``, ``"pattern"``) cannot follow a schedule from
    0 and are refused there.

    Attributes:
        history: ``[(step, sparsity), ...]`` of the updates made.
        sparsity: the target applied last (0.0 before the first update).

    >>> import torch.nn as nn, prunekit as pk
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> pruner = GradualPruner(model, final_sparsity=0.75, begin_step=0, end_step=4)
    >>> for _ in range(5):
    ...     _ = pruner.step()          # after each optimiser step
    >>> [round(s, 4) for _, s in pruner.history]
    [0.4336, 0.6562, 0.7383, 0.75]
    >>> round(pk.masks.sparsity_of(pk.get_masks(model)), 4)
    0.75
    """

    def __init__(self, model: nn.Module, *, final_sparsity: float, begin_step: int, end_step: int,
                 initial_sparsity: float = 0.0, frequency: int = 1, criterion: str = "magnitude",
                 granularity: str = "unstructured", scope: str = "global",
                 include: Iterable[str] | str | None = None, exclude: Iterable[str] | str | None = None,
                 reduction: str | None = None, data: Iterable | None = None, **criterion_kwargs: Any):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self._schedule = dict(final_sparsity=final_sparsity, begin_step=begin_step, end_step=end_step,
                              initial_sparsity=initial_sparsity, frequency=frequency)
        agp(0, **self._schedule)  # checks every schedule argument, naming it
        if not isinstance(criterion, str):
            raise TypeError(f"criterion must be a criterion name (str), got {criterion!r}")
        if criterion.lower() not in available():
            raise ValueError(f"criterion must be one of {sorted(available())}, got {criterion!r}")
        crit = available()[criterion.lower()]
        if crit.needs_data and data is None:
            raise ValueError(f"criterion {criterion!r} needs data= (batches of (inputs, targets))")
        self.model = model
        self._prune_args = dict(criterion=criterion, granularity=granularity, scope=scope, data=data,
                                include=include, exclude=exclude, reduction=reduction, **criterion_kwargs)
        self._check_masks(crit.level, granularity, scope, include, exclude, reduction)
        self.sparsity = 0.0
        self.history: list[tuple[int, float]] = []
        self._steps = 0

    def _check_masks(self, level: str, granularity: str, scope: str, include: Any, exclude: Any,
                     reduction: str | None) -> None:
        """make_masks' checks on placeholder scores, at the first non-zero and the final target."""
        shapes = score(self.model, "magnitude", include=include, exclude=exclude)  # cheap: names and shapes
        placeholders = {n: torch.zeros(s.shape[:1] if level == "channel" else s.shape) for n, s in shapes.items()}
        s = self._schedule
        first = s["initial_sparsity"] or agp(min(s["begin_step"] + s["frequency"], s["end_step"]), **s)
        for target in sorted({first, s["final_sparsity"]} - {0.0}):
            try:
                make_masks(placeholders, target, granularity, scope, reduction=reduction, model=self.model)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{e} (GradualPruner: the schedule goes from initial_sparsity="
                              f"{s['initial_sparsity']} to final_sparsity={s['final_sparsity']}; this "
                              f"failed at {target:.4g})") from e

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after ``step`` optimiser steps (:func:`prunekit.schedules.agp`)."""
        return agp(step, **self._schedule)

    def update(self, step: int) -> bool:
        """Bring the masks to the schedule's sparsity at ``step``; True if they were recomputed."""
        target = self.sparsity_at(step)
        self._steps = step
        if target <= self.sparsity:  # held between update steps; and never un-prunes
            return False
        prune(self.model, target, **self._prune_args)
        self.sparsity = target
        self.history.append((step, target))
        return True

    def step(self) -> bool:
        """Call after each optimiser step in your own loop: counts the step, then :meth:`update`."""
        return self.update(self._steps + 1)

    def __call__(self, info: StepInfo) -> None:
        """The :func:`prunekit.train.train` callback: :meth:`update` at ``info.step``."""
        self.update(info.step)

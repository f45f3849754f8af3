"""Pruning criteria: how important is each weight (or channel)?

A criterion maps a model to ``{parameter_name: score}``; a higher score means more
important, so it is kept longer. Criteria register themselves with
:func:`register`; :func:`available` lists them and :func:`prunekit.score` runs one.

The survey groups criteria into magnitude, l_p norm, sensitivity/saliency and loss
change (Cheng et al. 2024, Sec. 4). This package starts with the two baselines every
pruning study needs (Blalock et al. 2020): magnitude and random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..targets import Target, find_targets

ScoreFn = Callable[..., dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its function, a one-line description and its needs."""

    name: str
    fn: ScoreFn
    description: str
    needs_data: bool = False
    level: str = "weight"  # "weight" (score per weight) or "channel" (score per output channel)
    reference: str = ""


_REGISTRY: dict[str, Criterion] = {}


def register(name: str, *, description: str, needs_data: bool = False, level: str = "weight",
             reference: str = "") -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn(targets, data=..., **kwargs) -> {name: score}`` as ``name``."""

    def deco(fn: ScoreFn) -> ScoreFn:
        _REGISTRY[name] = Criterion(name, fn, description, needs_data, level, reference)
        return fn

    return deco


def available() -> dict[str, Criterion]:
    """All registered criteria by name (each with ``description`` and ``needs_data``)."""
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Criterion:
    if not isinstance(name, str):
        raise TypeError(f"criterion must be a string, one of {sorted(_REGISTRY)}; got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown criterion {name!r}; available criteria: {sorted(_REGISTRY)}")
    return _REGISTRY[key]


def score(
    model: nn.Module,
    criterion: str = "magnitude",
    data: Iterable | None = None,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """Score the prunable parameters of ``model`` with ``criterion``.

    Returns ``{param_name: score}`` with each score detached, on the CPU-or-parameter
    device, of the parameter's shape (weight-level criteria). Higher = more important.
    The model is not modified.

    >>> import torch.nn as nn, prunekit as pk
    >>> s = pk.score(nn.Linear(3, 2), "magnitude")
    >>> list(s), tuple(s["weight"].shape)
    (['weight'], (2, 3))
    """
    crit = get(criterion)
    if crit.needs_data and data is None:
        raise ValueError(f"criterion {crit.name!r} needs data: pass data=an iterable of (inputs, targets) batches")
    targets: list[Target] = find_targets(model, include=include, exclude=exclude)
    with torch.no_grad() if not crit.needs_data else torch.enable_grad():
        if crit.needs_data:
            return crit.fn(model, targets, data=data, **kwargs)
        return crit.fn(model, targets, **kwargs)


from . import magnitude as _magnitude  # noqa: E402,F401  (registers "magnitude", "random")

__all__ = ["Criterion", "available", "get", "register", "score"]

"""The registry of pruning criteria: :func:`register`, :func:`get`, :func:`available` and
:func:`score`, which runs a registered criterion.

Names are normalised when a criterion is registered (surrounding blanks stripped, lower
case), so ``register("MyCrit")`` is found as ``"mycrit"``, ``"MyCrit"`` or ``" MYCRIT "``.
Registering a name that is taken raises ``ValueError`` unless ``replace=True``. The
criteria that come with prunekit cannot be unregistered. For a criterion that should only
exist for a while (a test, a notebook cell) use the context manager :func:`registered`,
which restores the registry as it was, also when the block raises:

>>> import torch.nn as nn, prunekit as pk
>>> from prunekit.criteria import registry
>>> with registry.registered("Squared", lambda model, targets: {t.name: t.tensor.detach() ** 2
...                                                            for t in targets},
...                          description="w^2"):
...     sorted(pk.score(nn.Linear(2, 1), "squared"))
['weight']
>>> "squared" in registry.available()
False
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .._validate import check_materialised
from ..core.guards import preserved
from ..core.targets import Target, find_targets

__all__ = ["Criterion", "LEVELS", "ScoreFn", "available", "get", "register", "registered", "score",
           "unregister"]

ScoreFn = Callable[..., dict[str, torch.Tensor]]
LEVELS = ("weight", "channel")


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its function, a one-line description and its needs.

    ``needs_data``: it takes ``data=`` (batches of ``(inputs, targets)``) and fails without.
    ``needs_inputs``: it runs a forward pass on ``example_inputs=`` (no labels), e.g. SynFlow.
    ``level``: ``"weight"`` (a score per weight) or ``"channel"`` (a score per output channel).
    ``reference``: a citation key (``book/references.bib`` style).
    """

    name: str
    fn: ScoreFn
    description: str
    needs_data: bool = False
    level: str = "weight"
    reference: str = ""
    needs_inputs: bool = False


_REGISTRY: dict[str, Criterion] = {}
_BUILT_IN: set[str] = set()   # filled by criteria/__init__.py once the built-in modules are imported


def _key(name: object, arg: str = "name") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if not key:
        raise ValueError(f"{arg} must be a non-empty string, got {name!r}")
    return key


def _make(name: str, fn: object, description: object, needs_data: object, level: object, reference: object,
          needs_inputs: object) -> Criterion:
    if not isinstance(description, str) or not description.strip():
        raise ValueError("description must be a non-empty string: one line saying what the score is")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    for arg, value in (("needs_data", needs_data), ("needs_inputs", needs_inputs)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} must be a bool, got {type(value).__name__}")
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a string (a citation key), got {type(reference).__name__}")
    if not callable(fn):
        raise TypeError(f"register({name!r}) decorates a function, got {type(fn).__name__}")
    return Criterion(name, fn, description, needs_data, level, reference, needs_inputs)


def _check_free(key: str, replace: object) -> None:
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be a bool, got {type(replace).__name__}")
    if key in _REGISTRY and not replace:
        raise ValueError(f"a criterion {key!r} is already registered; pass replace=True to replace it, "
                         "or use criteria.registered(...) to replace it for a block only")


def register(name: str, *, description: str, needs_data: bool = False, level: str = "weight",
             reference: str = "", needs_inputs: bool = False,
             replace: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn(model, targets, [data=...,] **kwargs) -> {name: score}`` as ``name``.

    :func:`score` passes ``data=`` when ``needs_data`` (and checks it is given), runs the model in
    eval mode (or ``mode="train"``), and passes every other keyword (e.g. ``example_inputs=``
    for ``needs_inputs`` criteria) through to ``fn``. ``name`` is stored stripped and in lower
    case. A name that is already registered raises ``ValueError`` unless ``replace=True``. The
    toolkit for writing ``fn`` is :mod:`prunekit.criteria.api`.
    """
    key = _key(name)
    _make(key, len, description, needs_data, level, reference, needs_inputs)   # check the arguments now
    _check_free(key, replace)

    def deco(fn: ScoreFn) -> ScoreFn:
        crit = _make(key, fn, description, needs_data, level, reference, needs_inputs)
        _check_free(key, replace)
        _REGISTRY[key] = crit
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove a criterion that :func:`register` added.

    ``ValueError`` for a name that is not registered and for the criteria that come with
    prunekit (replace those with ``register(..., replace=True)`` or :func:`registered`).
    """
    key = _key(name)
    if key in _BUILT_IN:
        raise ValueError(f"{name!r} comes with prunekit and cannot be unregistered")
    if key not in _REGISTRY:
        raise ValueError(f"no criterion {name!r} is registered; "
                         f"registered by you: {sorted(set(_REGISTRY) - _BUILT_IN)}")
    del _REGISTRY[key]


@contextmanager
def registered(name: str, fn: ScoreFn, *, description: str, needs_data: bool = False, level: str = "weight",
               reference: str = "", needs_inputs: bool = False, replace: bool = False) -> Iterator[Criterion]:
    """Context manager: ``fn`` is registered as ``name`` inside the block only.

    On exit (normal or by an exception) the registry is as before: the name is removed, or,
    with ``replace=True`` over an existing criterion (a built-in one included), that criterion
    is back. Yields the :class:`Criterion`.
    """
    key = _key(name)
    crit = _make(key, fn, description, needs_data, level, reference, needs_inputs)
    _check_free(key, replace)
    before = _REGISTRY.get(key)
    _REGISTRY[key] = crit
    try:
        yield crit
    finally:
        if before is None:
            _REGISTRY.pop(key, None)
        else:
            _REGISTRY[key] = before


def _mark_built_in() -> None:
    """Record every criterion registered so far as one that comes with prunekit."""
    _BUILT_IN.update(_REGISTRY)


def available() -> dict[str, Criterion]:
    """All registered criteria by name (each with ``description``, ``needs_data``,
    ``needs_inputs``, ``level`` and ``reference``)."""
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Criterion:
    """The registered criterion ``name`` (any case, blanks stripped); ``ValueError`` naming the
    available ones if there is none, ``TypeError`` if ``name`` is not a string."""
    if not isinstance(name, str):
        raise TypeError(f"criterion must be a string, one of {sorted(_REGISTRY)}; got {type(name).__name__}")
    key = name.strip().lower()
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

    Returns ``{param_name: score}`` with each score detached, on the parameter's device, of
    the parameter's shape (weight-level criteria) or ``[out_channels]`` (channel-level
    criteria; see ``available()[name].level``). Higher = more important.

    ``data`` (an iterable of ``(inputs, targets)`` batches) is required by data-driven
    criteria (``ValueError`` without it); ``example_inputs=`` feeds forward-only data-free
    criteria (SynFlow). Data-driven criteria run the model in eval mode unless
    ``mode="train"`` (BatchNorm then uses batch statistics; its running statistics are
    restored afterwards). Other keyword arguments go to the criterion (``batches=``,
    ``loss_fn=``, ...).

    The model is not modified: weights, buffers, ``requires_grad`` flags, ``.grad`` fields
    and train/eval mode are as before, also when the criterion raises.

    >>> import torch.nn as nn, prunekit as pk
    >>> s = pk.score(nn.Linear(3, 2), "magnitude")
    >>> list(s), tuple(s["weight"].shape)
    (['weight'], (2, 3))
    """
    crit = get(criterion)
    check_materialised(model)  # a lazy or meta model has no weights to score
    if crit.needs_data and data is None:
        raise ValueError(f"criterion {crit.name!r} needs data: pass data=an iterable of (inputs, targets) batches")
    targets: list[Target] = find_targets(model, include=include, exclude=exclude)
    runs_model = crit.needs_data or crit.needs_inputs
    mode = kwargs.pop("mode", "eval") if crit.needs_data else None
    if mode not in (None, "eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if not runs_model:  # reads weights only
        with torch.no_grad():
            out = crit.fn(model, targets, **kwargs)
        return {k: v.detach() for k, v in out.items()}
    with preserved(model), torch.enable_grad():
        if crit.needs_data:
            model.train(mode == "train")
            out = crit.fn(model, targets, data=data, **kwargs)
        else:
            out = crit.fn(model, targets, **kwargs)
    return {k: v.detach() for k, v in out.items()}

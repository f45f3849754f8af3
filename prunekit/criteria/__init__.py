"""Pruning criteria: how important is each weight (or channel)?

A criterion maps a model to ``{parameter_name: score}``; a higher score means more
important, so it is kept longer. Criteria register themselves with
:func:`register`; :func:`available` lists them and :func:`prunekit.score` runs one.

The survey groups criteria into magnitude, l_p norm, sensitivity/saliency and loss
change (Cheng et al. 2024, Sec. 4). One module per family:

* :mod:`.magnitude` — ``magnitude`` and ``random``, the two baselines every pruning study
  needs (Blalock et al. 2020);
* :mod:`.norm` — ``lamp`` (weights), ``l1_filter`` and ``fpgm`` (channels): data-free norms;
* :mod:`.sensitivity` — ``taylor``, ``taylor_channel``, ``snip``, ``grasp``, ``obd``:
  gradients (and Hessians) of the loss on data;
* :mod:`.movement` — ``movement`` and :class:`~prunekit.criteria.movement.MovementTracker`;
* :mod:`.synflow` — ``synflow`` (data-free, one forward/backward) and
  :func:`~prunekit.criteria.synflow.prune_synflow` (its iterative schedule);
* :mod:`.activation` — ``apoz``, ``mean_activation``, ``hrank``: statistics of the
  post-ReLU feature maps of each channel;
* :mod:`.bn_scale` — ``bn_scale``: |gamma| of the BatchNorm after a layer (Network Slimming);
* :mod:`.loss_change` — ``loss_change``: the measured loss increase when a channel is zeroed;
* :mod:`.reconstruction` — ``thinet``, ``lasso_channel`` (channels) and ``obs`` (weights): the
  next layer's (or the layer's own) output reconstructed on data (ThiNet, He et al. 2017, OBS),
  with :func:`~prunekit.criteria.reconstruction.thinet_prune`,
  :func:`~prunekit.criteria.reconstruction.lasso_channel_prune` and
  :func:`~prunekit.criteria.reconstruction.obs_prune_layer` that also re-fit the kept weights.

Common conventions (all criteria):

* keys are the logical parameter names of the targets; weight-level scores have the
  parameter's shape, channel-level scores shape ``[out_channels]``;
* scores are computed on the *effective* weight of a masked model (``weight_orig *
  weight_mask``) and, for gradient criteria, with gradients w.r.t. that effective weight;
* data-driven criteria take ``data`` (an iterable of ``(inputs, targets)``), ``batches=``
  (how many to use, default all), ``loss_fn=`` (default cross-entropy, where a loss is used)
  and run the model in eval mode (``mode="train"`` uses batch statistics instead);
* the model is left exactly as it was: weights, buffers (BatchNorm running statistics),
  ``requires_grad`` flags, ``.grad`` fields, train/eval mode and hooks.

To write a criterion of your own, see :mod:`prunekit.criteria.api` (``pk.criteria.api``):
:func:`register` plus the helpers the built-in gradient criteria use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from .._validate import check_materialised
from ..core.targets import Target, find_targets

ScoreFn = Callable[..., dict[str, torch.Tensor]]


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
    level: str = "weight"  # "weight" (score per weight) or "channel" (score per output channel)
    reference: str = ""
    needs_inputs: bool = False


_REGISTRY: dict[str, Criterion] = {}
LEVELS = ("weight", "channel")


def register(name: str, *, description: str, needs_data: bool = False, level: str = "weight",
             reference: str = "", needs_inputs: bool = False) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator: register ``fn(model, targets, [data=...,] **kwargs) -> {name: score}`` as ``name``.

    :func:`score` passes ``data=`` when ``needs_data`` (and checks it is given), runs the model in
    eval mode (or ``mode="train"``), and passes every other keyword (e.g. ``example_inputs=``
    for ``needs_inputs`` criteria) through to ``fn``. Names are case-insensitive (stored in
    lower case); registering a name again replaces the earlier function. The toolkit for
    writing ``fn`` is :mod:`prunekit.criteria.api`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(description, str) or not description.strip():
        raise ValueError("description must be a non-empty string: one line saying what the score is")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}")
    key = name.lower()

    def deco(fn: ScoreFn) -> ScoreFn:
        if not callable(fn):
            raise TypeError(f"register({name!r}) decorates a function, got {type(fn).__name__}")
        _REGISTRY[key] = Criterion(key, fn, description, needs_data, level, reference, needs_inputs)
        return fn

    return deco


def available() -> dict[str, Criterion]:
    """All registered criteria by name (each with ``description``, ``needs_data``,
    ``needs_inputs``, ``level`` and ``reference``)."""
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
    with _common.preserved(model), torch.enable_grad():
        if crit.needs_data:
            model.train(mode == "train")
            out = crit.fn(model, targets, data=data, **kwargs)
        else:
            out = crit.fn(model, targets, **kwargs)
    return {k: v.detach() for k, v in out.items()}


from . import _common  # noqa: E402
from . import magnitude as _magnitude  # noqa: E402,F401  (registers "magnitude", "random")
from . import norm, sensitivity, movement, synflow, activation, bn_scale, loss_change  # noqa: E402,F401
from . import reconstruction  # noqa: E402,F401  (registers "thinet", "lasso_channel", "obs")
from . import api  # noqa: E402  (after every built-in criterion: it records their names)

__all__ = ["Criterion", "available", "get", "register", "score", "api", "activation", "bn_scale",
           "loss_change", "movement", "norm", "reconstruction", "sensitivity", "synflow"]

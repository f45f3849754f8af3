"""Iterative magnitude pruning, lottery tickets and rewinding: :func:`imp`.

* Frankle & Carbin, *The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
  Networks* (ICLR 2019): train, prune ``p%`` of the remaining weights by magnitude (globally
  or per layer), reset the survivors to their initial values, repeat; the sparse network
  reset to ``theta_0`` (the "winning ticket") trains to the dense accuracy.
* Frankle, Dziugaite, Roy & Carbin, *Linear Mode Connectivity and the Lottery Ticket
  Hypothesis* (ICML 2020): **weight rewinding** -- reset to the weights at iteration ``k``
  early in training instead of ``theta_0``, which finds tickets in deeper networks.
* Renda, Frankle & Carbin, *Comparing Rewinding and Fine-tuning in Neural Network Pruning*
  (ICLR 2020): **learning-rate rewinding** -- keep the trained weights and retrain them with
  the original learning-rate schedule.

The three differ only in where the surviving weights go after each prune, so they are one
function with ``rewind="init" | state_dict | None``. The cumulative sparsities are the
schedule axis' :func:`prunekit.schedules.iterative`; each prune is :func:`prunekit.prune`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from ..._validate import check_int, check_materialised, check_scope, check_sparsity
from ...core.masks import check_maskable
from ...core.targets import Target, all_parameters, find_targets, is_masked, pruning_hooks
from ...criteria import get as get_criterion
from ...pipeline import prune
from ...schedules import iterative

__all__ = ["imp"]

#: ``rewind`` values that are not a state_dict.
REWIND_MODES = ("init", None)

_Point = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # parameters, buffers


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's buffers by name, except the ``<attr>_mask`` buffers of the masks."""
    out = {}
    for prefix, module in model.named_modules():
        for name, b in module._buffers.items():
            if b is None or (name.endswith("_mask") and is_masked(module, name[: -len("_mask")])):
                continue
            out[f"{prefix}.{name}" if prefix else name] = b
    return out


def _snapshot(model: nn.Module) -> _Point:
    """The weights at the call: every parameter (``weight_orig`` of a masked one, by its
    logical name) and every buffer, cloned."""
    params = {n: t.parameter.detach().clone() for n, t in all_parameters(model).items()}
    return params, {n: b.detach().clone() for n, b in _buffers(model).items()}


def _from_state_dict(model: nn.Module, state: Mapping) -> _Point:
    """The rewind point held by ``state`` (a ``state_dict`` of this architecture, masked or
    not), checked entry by entry and cloned; ``ValueError``/``TypeError`` naming ``rewind``."""
    used: set[str] = set()
    missing: list[str] = []

    def lookup(keys: Iterable[str], shape: torch.Size) -> torch.Tensor | None:
        for key in keys:
            if key in state:
                value = state[key]
                if not isinstance(value, torch.Tensor):
                    raise TypeError(f"rewind[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
                if value.shape != shape:
                    raise ValueError(f"rewind[{key!r}] has shape {tuple(value.shape)} but the model's tensor has "
                                     f"shape {tuple(shape)}: rewind must be a state_dict of this model")
                used.add(key)
                return value.detach().clone()
        return None

    params: dict[str, torch.Tensor] = {}
    for name, t in all_parameters(model).items():
        keys = [k for a in t.aliases for k in (a, a + "_orig")]
        value = lookup(keys, t.shape)
        if value is None:
            missing.append(name)
        else:
            params[name] = value
    buffers: dict[str, torch.Tensor] = {}
    for name, b in _buffers(model).items():
        value = lookup([name], b.shape)
        if value is None:
            missing.append(name)
        else:
            buffers[name] = value
    if missing:
        raise ValueError(f"rewind has no entry for {missing}: pass the model's full state_dict saved at the rewind "
                         "step (e.g. copy.deepcopy(model.state_dict()))")
    masks = {a + "_mask" for t in all_parameters(model).values() for a in t.aliases}
    unexpected = [k for k in state if k not in used and k not in masks]
    if unexpected:
        raise ValueError(f"rewind has entries {unexpected[:5]} that are not parameters or buffers of the model: "
                         "rewind must be a state_dict of this model")
    return params, buffers


def _rewind_point(model: nn.Module, rewind: object) -> _Point | None:
    if rewind is None:
        return None
    if isinstance(rewind, str):
        if rewind.strip().lower() != "init":
            raise ValueError(f"rewind must be 'init', a state_dict or None, got {rewind!r}")
        return _snapshot(model)
    if isinstance(rewind, Mapping):
        return _from_state_dict(model, rewind)
    raise TypeError(f"rewind must be 'init', a state_dict (a dict of tensors) or None, got {type(rewind).__name__}")


@torch.no_grad()
def _rewind(model: nn.Module, point: _Point) -> None:
    """Copy the rewind point into every parameter (``weight_orig`` of a masked one: the mask
    stays, so the effective weight is the rewound weight times the mask) and every buffer, and
    refresh the masked ``weight`` attributes (``torch.nn.utils.prune`` caches them between
    forward passes), so that ``module.weight`` shows the ticket at once."""
    params, buffers = point
    targets: dict[str, Target] = all_parameters(model)
    for name, value in params.items():
        targets[name].parameter.copy_(value)
    now = _buffers(model)
    for name, value in buffers.items():
        now[name].copy_(value)
    for module in model.modules():  # the cached masked weight, as the next forward recomputes it
        for hook in pruning_hooks(module):
            setattr(module, hook._tensor_name, hook.apply_mask(module))


def imp(
    model: nn.Module,
    train_fn: Callable[[nn.Module], object],
    *,
    final_sparsity: float,
    rounds: int,
    rewind: str | Mapping[str, torch.Tensor] | None = "init",
    criterion: str = "magnitude",
    scope: str = "global",
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> dict[str, torch.Tensor]:
    """Iterative magnitude pruning with rewinding (lottery tickets), in place; returns the masks.

    For round ``k = 1 .. rounds``:

    1. ``train_fn(model)`` trains the model in place (with its current masks: use
       :func:`prunekit.train.train` or any loop that keeps the ``torch.nn.utils.prune``
       reparametrisation); its return value is ignored;
    2. :func:`prunekit.prune` with ``criterion`` (unstructured, ``scope``) prunes to the
       cumulative sparsity ``s_k = iterative(final_sparsity, rounds)[k-1] = 1 - (1 -
       final_sparsity)**(k/rounds)``, scored on the trained weights: exactly
       ``round(s_k * N)`` of the ``N`` chosen weights are masked in global scope (``round(s_k
       * n_l)`` per tensor in layer scope; never all, see :mod:`prunekit.allocation`). Masked
       weights score lowest, so the masks are nested: a weight pruned in one round stays
       pruned (weights masked before the call count as pruned too);
    3. every parameter -- the surviving weights, the biases, BatchNorm scales and shifts,
       also parameters that are not pruned -- and every buffer (BatchNorm running
       statistics and ``num_batches_tracked``) is reset to the rewind point, as OpenLTH
       does by loading the whole checkpoint; the masks stay.

    So ``train_fn`` is called exactly ``rounds`` times, and the model is returned pruned to
    ``final_sparsity``, rewound and **not yet trained**: training it once more (the caller's
    job) trains the ticket. ``rewind`` chooses the rewind point:

    * ``"init"`` -- the weights and buffers at the call (Frankle & Carbin 2019, ``theta_0``
      when the model is untrained). Called on a model already trained for ``k`` steps
      (with ``train_fn`` doing the remaining steps), this is weight rewinding to ``k``.
    * a ``state_dict`` -- weight rewinding to the step at which it was saved (Frankle et al.
      2020): the model's full ``state_dict`` (every parameter and buffer; the masked form
      with ``weight_orig``/``weight_mask`` keys is accepted, its masks are ignored), checked
      and copied at the call.
    * ``None`` -- learning-rate rewinding (Renda et al. 2020): nothing is reset; each round
      prunes the trained weights and the next ``train_fn`` call retrains them from there
      (``train_fn`` should replay the original learning-rate schedule). The model is returned
      trained and pruned, and the caller retrains it once more.

    ``criterion`` must be data-free and weight-level (``"magnitude"`` as in the papers;
    ``"random"`` gives the random-pruning control). ``include``/``exclude`` choose the pruned
    parameters as in :func:`prunekit.prune` (by default the weights of Linear and Conv layers).

    Returns the masks of the chosen parameters after the last round (``{name: bool tensor}``,
    True = kept), as applied to the model.

    Raises:
        TypeError / ValueError naming the argument, before ``train_fn`` runs and before the
        model is touched. An error raised by ``train_fn`` itself propagates, and the rounds
        completed before it stay applied.

    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0); net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> init = {k: v.clone() for k, v in net.state_dict().items()}
    >>> masks = imp(net, lambda m: None, final_sparsity=0.75, rounds=2)
    >>> sum(int((~m).sum()) for m in masks.values())        # round(0.75 * 80)
    60
    >>> torch.equal(net[0].weight_orig, init["0.weight"])   # rewound to the call
    True
    """
    check_materialised(model)
    if not callable(train_fn):
        raise TypeError(f"train_fn must be a callable train_fn(model) that trains the model in place, "
                        f"got {type(train_fn).__name__}")
    s_f = check_sparsity(final_sparsity, "final_sparsity")
    n = check_int("rounds", rounds, minimum=1)
    schedule = iterative(s_f, n)
    scope = check_scope(scope)
    crit = get_criterion(criterion)
    if crit.needs_data or crit.needs_inputs:
        raise ValueError(f"criterion {crit.name!r} needs data or example inputs; imp scores the trained weights "
                         "without data: use a data-free criterion such as 'magnitude'")
    if crit.level != "weight":
        raise ValueError(f"criterion {crit.name!r} scores {crit.level}s; imp prunes single weights: use a "
                         "weight-level criterion such as 'magnitude'")
    for t in find_targets(model, include=include, exclude=exclude):
        check_maskable(t)
    point = _rewind_point(model, rewind)

    masks: dict[str, torch.Tensor] = {}
    for s_k in schedule:
        train_fn(model)
        masks = prune(model, s_k, criterion, "unstructured", scope, include=include, exclude=exclude)
        if point is not None:
            _rewind(model, point)
    return masks

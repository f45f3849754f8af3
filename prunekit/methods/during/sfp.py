"""Soft filter pruning (SFP) during training.

He, Kang, Dong, Fu & Yang, "Soft filter pruning for accelerating deep convolutional neural
networks", IJCAI 2018 (arXiv 1808.06866), Algorithm 1: after every training epoch, in every
conv layer ``i`` the ``P_i`` fraction of filters with the smallest ℓp norm (p = 2 in the
paper) are set to zero -- *softly*: they are not masked, they stay trainable and are updated by
the next epoch's steps, so a filter zeroed by mistake can recover and another one may be
zeroed at the next update. At the end of training the filters zeroed last are removed for good
(here: :meth:`SoftFilterPruning.finalize` applies hard channel masks, and
:func:`prunekit.compact` removes the channels physically).

:class:`SoftFilterPruning` is a training-loop callback in the same style as
:class:`prunekit.methods.during.GradualPruner`: pass it as ``callback=`` of
:func:`prunekit.train.train` (with ``steps_per_epoch=len(train_loader)`` or ``every=`` a number
of steps), or call :meth:`~SoftFilterPruning.epoch_end` / :meth:`~SoftFilterPruning.step` in
your own loop.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from ..._validate import check_int, check_model, check_number, check_sparsity
from ...core.masks import apply_masks
from ...core.targets import Target, find_targets
from ...pipeline import make_masks
from ...train import StepInfo

__all__ = ["SoftFilterPruning", "filter_norms"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def filter_norms(weight: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """The ℓp norm of every filter (output row) of a Conv/Linear ``weight``: shape ``[out]``."""
    return weight.detach().reshape(weight.shape[0], -1).norm(p=p, dim=1)


class SoftFilterPruning:
    """Zero the lowest-norm filters of each conv layer after every epoch; let them recover (He et al. 2018).

    Args:
        model: the network; its parameters are zeroed in place (no masks until
            :meth:`finalize`).
        sparsity: the fraction ``P`` of filters zeroed in *every* chosen layer (the paper's
            per-layer pruning rate), in [0, 1). Layer ``i`` with ``n_i`` filters loses exactly
            ``min(round(P · n_i), n_i - 1)`` of them (Python's ``round``; the rule of
            :func:`prunekit.make_masks` with ``granularity="channel", scope="layer"``, which
            also chooses the filters, ties broken by the lower index) -- the paper's
            ``N_{i+1} P_i`` -- so :meth:`finalize` removes the same number.
        include / exclude: parameter names or fnmatch patterns as in :func:`prunekit.prune`.
            Default: the weights of every Conv1d/2d/3d layer (not Linear layers; ``include``
            may name Linear weights, whose output neurons are then the "filters").
        norm: ``p`` of the ℓp filter norm (2 in the paper; 1 also appears there).
        every: ``"epoch"`` (the paper) or a number of optimiser steps between updates.
        steps_per_epoch: with ``every="epoch"`` as a :func:`prunekit.train.train` callback,
            the number of steps per epoch (``len(train_loader)``): the update runs after the
            epoch's last step. Not needed when you call :meth:`epoch_end` yourself.
        bn_data: batches (``(inputs, targets)`` or inputs; a few suffice) on which every
            BatchNorm's running statistics are recomputed after each update and in
            :meth:`finalize` (:func:`torch.optim.swa_utils.update_bn`: a cumulative average in
            training mode, no gradient). Zeroing filters changes the distribution that every
            later BatchNorm sees, so the running statistics gathered before the update are stale
            until training refreshes them; an evaluation right after an update needs them
            recomputed ("adaptive BN", Li et al., *EagleEye*, ECCV 2020). On the book's
            SmallCNN on digits (P = 0.3, 8 epochs, seed 0; dense: 98.4%): 62% test accuracy right after the last
            update with stale statistics, 96.7% with ``bn_data`` = the training loader (96.4%
            after :meth:`finalize` and :func:`prunekit.compact`, at 80,344 of 161,408 MACs).
            ``None``: statistics are left alone.

    Only the filter weights are zeroed, as in the paper's code (its convs have no bias); a
    bias or a following BatchNorm keeps the channel's output a constant until
    :meth:`finalize` and :func:`prunekit.compact` remove it (``compact`` equals
    :func:`prunekit.zero_removed_channels` of the masked model, which zeroes those too).

    A zeroed filter recovers through its gradient, which flows only where the channel's output
    is non-zero after the activation: with a bias (or a BatchNorm ``beta``) > 0 before a ReLU. A
    bias-free conv followed directly by a ReLU outputs exactly 0 there, where the ReLU's
    gradient is 0, so its zeroed filters stay zero (only momentum moves them).

    Attributes:
        zeroed: ``{name: bool tensor [out]}``, the filters zeroed by the last update.
        history: ``[(when, {name: number zeroed}), ...]`` for every update; ``when`` is the
            optimiser step (the callback, :meth:`step`) or the number of epochs ended
            (:meth:`epoch_end`).

    Everything is checked at construction, before the model is touched.

    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 5, 3))
    >>> sfp = SoftFilterPruning(model, 0.5)     # train(..., callback=sfp) with steps_per_epoch=
    >>> {n: int(z.sum()) for n, z in sfp.update().items()}   # round(4.0), round(2.5)
    {'0.weight': 4, '2.weight': 2}
    >>> masks = sfp.finalize()                  # after the last epoch; then prunekit.compact
    >>> [int(m.flatten(1).any(1).sum()) for m in masks.values()]
    [4, 3]
    """

    def __init__(self, model: nn.Module, sparsity: float, *, include: Iterable[str] | str | None = None,
                 exclude: Iterable[str] | str | None = None, norm: float = 2, every: str | int = "epoch",
                 steps_per_epoch: int | None = None, bn_data: Iterable | None = None):
        check_model(model)
        if bn_data is not None and (isinstance(bn_data, (str, bytes, torch.Tensor))
                                    or not isinstance(bn_data, Iterable)):
            raise TypeError(f"bn_data must be an iterable of batches (a DataLoader or a list), got "
                            f"{type(bn_data).__name__}")
        self.bn_data = bn_data
        self.sparsity = check_sparsity(sparsity)
        self.norm = check_number("norm", norm, low=0.0, low_open=True, what="a finite number > 0 (p of the lp norm)")
        if isinstance(every, str):
            if every != "epoch":
                raise ValueError(f"every must be 'epoch' or a number of steps (int >= 1), got {every!r}")
        else:
            every = check_int("every", every, minimum=1)
        self.every = every
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch,
                                                                             minimum=1)
        self.model = model
        targets = find_targets(model, include=include, exclude=exclude)
        if include is None:
            targets = [t for t in targets if any(isinstance(u.module, _CONV) and u.attr == "weight" for u in t.uses)]
        else:
            for t in targets:
                if not any(isinstance(u.module, (*_CONV, nn.Linear)) and u.attr == "weight" for u in t.uses):
                    raise ValueError(f"include: {t.name!r} is not the weight of a Conv or Linear layer; soft filter "
                                     f"pruning zeroes filters (output rows) of conv/linear weights")
        if not targets:
            raise ValueError("SoftFilterPruning: model has no conv weights to prune (pass include= to choose "
                             "Linear weights)")
        for t in targets:
            if t.is_masked:
                raise ValueError(f"{t.name!r} is already masked: soft filter pruning zeroes trainable filters "
                                 f"(remove_masks first)")
        self._targets: dict[str, Target] = {t.name: t for t in targets}
        self.zeroed: dict[str, torch.Tensor] = {}
        self.history: list[tuple[int, dict[str, int]]] = []
        self._steps = 0
        self._epochs = 0

    @property
    def names(self) -> list[str]:
        """The parameters whose filters are pruned, in model order."""
        return list(self._targets)

    def scores(self) -> dict[str, torch.Tensor]:
        """``{name: ℓp norm of every filter}`` of the current weights."""
        return {n: filter_norms(t.parameter, self.norm) for n, t in self._targets.items()}

    def _masks(self) -> dict[str, torch.Tensor]:
        """Channel keep-masks (parameter-shaped) for the current scores."""
        shapes = {n: tuple(t.shape) for n, t in self._targets.items()}
        return make_masks(self.scores(), self.sparsity, "channel", "layer", shapes=shapes)

    @torch.no_grad()
    def update(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """Zero the lowest-norm filters of every layer now; return ``{name: zeroed filters [out]}``."""
        step = self._steps if step is None else step
        zeroed = {}
        for name, keep in self._masks().items():
            gone = ~keep.reshape(keep.shape[0], -1).any(dim=1)
            param = self._targets[name].parameter
            param[gone] = 0
            zeroed[name] = gone
        self.zeroed = zeroed
        self._recalibrate()
        self.history.append((step, {n: int(g.sum()) for n, g in zeroed.items()}))
        return zeroed

    def epoch_end(self) -> dict[str, torch.Tensor]:
        """Call at the end of every epoch in your own loop (``every="epoch"``): :meth:`update`."""
        self._epochs += 1
        return self.update(self._epochs)

    def step(self) -> bool:
        """Call after each optimiser step in your own loop; True when this step updated."""
        self._steps += 1
        period = self.steps_per_epoch if self.every == "epoch" else self.every
        if period is None:
            raise ValueError("every='epoch' needs steps_per_epoch= (len(train_loader)) to run per step; or call "
                             "epoch_end() at the end of every epoch")
        if self._steps % period == 0:
            self.update()
            return True
        return False

    def __call__(self, info: StepInfo) -> None:
        """The :func:`prunekit.train.train` callback: counts ``info.step`` and updates every period."""
        self._steps = info.step - 1
        self.step()

    def finalize(self) -> dict[str, torch.Tensor]:
        """Hard-prune: apply channel masks that remove the lowest-norm filters of every layer; return them.

        The filters are chosen on the current weights exactly as :meth:`update` chooses them
        (right after an update: the filters it zeroed), so each layer keeps
        ``n_i - min(round(P · n_i), n_i - 1)`` filters. The masks are applied with
        :func:`prunekit.apply_masks`; :func:`prunekit.compact` then removes the channels.
        """
        masks = self._masks()
        apply_masks(self.model, masks)
        self._recalibrate()
        return masks

    def _recalibrate(self) -> None:
        if self.bn_data is not None:
            update_bn(self.bn_data, self.model)


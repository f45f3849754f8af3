"""Learning to prune by sparsity regularisation: penalties that drive weights or channels to zero.

The survey's first way to *learn* a mask (Cheng et al. 2024, "sparsity regularization"):

* :func:`l1_penalty` -- ``strength * sum |w|`` over the prunable weights (Lasso).
* :func:`group_lasso_penalty` -- SSL (Wen et al., NeurIPS 2016), group lasso
  ``strength * sum_layers sum_channels ||W_c||_2`` over output channels (rows / filters);
  ``groups="channels"`` / ``"both"`` add SSL's channel-wise (input-channel) groups.
* :func:`bn_l1_penalty` -- Network Slimming (Liu et al., ICCV 2017):
  ``strength * sum |gamma|`` over all BatchNorm scales.
* :func:`network_slimming` -- the full recipe: train with the BN penalty, prune channels
  globally by ``|gamma|``, fine-tune.

Every penalty returns a differentiable scalar tensor, so ``loss + penalty`` works, and takes
the model as its first argument, so ``functools.partial(bn_l1_penalty, strength=1e-4)`` is a
``regularizer`` for :func:`prunekit.train.train` (which calls ``regularizer(model)`` once per
step and adds it to the mean cross-entropy of the batch).

Which layers: :func:`prunekit.core.targets.find_targets` (Linear / Conv weights, ``include`` /
``exclude``). Learned masks (L0 gates, STE) are in :mod:`prunekit.methods.learned.mask_learning`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ... import granularity as gran
from ..._validate import check_int, check_model, check_nonneg, check_positive
from ...allocation import check_sparsity
from ...core.masks import apply_masks, get_masks
from ...core.targets import effective, find_targets
from ...criteria import score
from ...criteria._common import following_batchnorm, module_names
from ...pipeline import prune
from ...train import fine_tune, train

__all__ = ["l1_penalty", "group_lasso_penalty", "bn_l1_penalty", "bn_gammas", "network_slimming", "channel_masks",
           "GROUPS"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

def _batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# --------------------------------------------------------------------------- penalties

def l1_penalty(model: nn.Module, strength: float, include=None, exclude=None) -> torch.Tensor:
    """``strength * sum |w|`` over the prunable weights (:func:`~prunekit.core.targets.find_targets`).

    Masked weights are read through their mask (``orig * mask``), so pruned entries add nothing.
    The (sub)gradient is ``strength * sign(w)`` (0 at w = 0).
    """
    strength = check_nonneg("strength", strength)
    targets = find_targets(check_model(model), include=include, exclude=exclude)
    return strength * sum(t.tensor.abs().sum() for t in targets)


def _row_norms(w: torch.Tensor) -> torch.Tensor:
    """L2 norm of each output channel ``[out, ...] -> [out]``, with gradient 0 at a zero row."""
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(-1, 1)
    sq = (rows * rows).sum(dim=1)
    safe = torch.where(sq > 0, sq, torch.ones_like(sq))
    return torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))


GROUPS = ("filters", "channels", "both")


def group_lasso_penalty(model: nn.Module, strength: float, include=None, exclude=None,
                        groups: str = "filters") -> torch.Tensor:
    """SSL group lasso (Wen et al. 2016): ``strength * sum_layers sum_groups ||W_g||_2``.

    ``groups="filters"`` (default): one group per output channel of every prunable weight (a conv
    filter ``W[c, :, :, :]``, a Linear row ``W[c, :]``), the groups whose removal is channel
    pruning. ``"channels"``: one group per input channel (``W[:, c, ...]``, a Linear column),
    SSL's channel-wise term. ``"both"``: the sum of the two (SSL's filter-wise + channel-wise
    regulariser with ``lambda_n = lambda_c = strength``). Groups are not weighted by their size,
    as in SSL's equations (no ``sqrt(|g|)`` factor of Yuan & Lin's group lasso). The gradient of
    a group that is exactly zero is taken as 0 (a valid subgradient), never NaN.
    """
    strength = check_nonneg("strength", strength)
    if groups not in GROUPS:
        raise ValueError(f"groups must be one of {GROUPS}, got {groups!r}")
    targets = find_targets(check_model(model), include=include, exclude=exclude)
    total = 0.0
    for t in targets:
        w = t.tensor
        if groups in ("filters", "both"):
            total = total + _row_norms(w).sum()
        if groups in ("channels", "both") and w.dim() > 1:
            total = total + _row_norms(w.transpose(0, 1)).sum()
    return strength * total


def bn_gammas(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm scales ``{bn_module_name: gamma}`` (effective, i.e. masked; not detached)."""
    out = {}
    for name, bn in _batchnorms(check_model(model)):
        g = effective(bn, "weight")
        if g is not None:
            out[name] = g
    return out


def bn_l1_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """Network Slimming's sparsity term ``strength * sum |gamma|`` over every BatchNorm scale.

    Its gradient w.r.t. each ``gamma`` is ``strength * sign(gamma)``, exactly the subgradient
    Liu et al. add to the gamma gradients. A model without an affine BatchNorm: ``ValueError``.
    """
    strength = check_nonneg("strength", strength)
    gammas = bn_gammas(model)
    if not gammas:
        raise ValueError("bn_l1_penalty needs a BatchNorm with a scale (affine=True); the model has none")
    return strength * sum(g.abs().sum() for g in gammas.values())


# --------------------------------------------------------------------------- channel masks

def channel_masks(model: nn.Module, keep: dict[str, torch.Tensor], followers: bool = True) -> dict[str, torch.Tensor]:
    """Full-shape prunekit masks that remove whole output channels.

    ``keep`` maps a prunable weight's name (``"features.0.weight"``) to a bool vector ``[out]``.
    The result masks that weight's rows and, with ``followers``, the matching entries of the
    layer's bias and of the BatchNorm right after it (scale and shift), so a removed channel's
    output is exactly zero, as if it were physically removed. Pass it to
    :func:`prunekit.apply_masks`.
    """
    targets = {t.name: t for t in find_targets(model, include=list(keep))}
    masks: dict[str, torch.Tensor] = {}
    bns = following_batchnorm(model, list(targets.values())) if followers else {}
    names = module_names(model)
    for name, k in keep.items():
        t = targets[name]
        k = k.detach().bool().reshape(-1)
        if k.numel() != t.shape[0]:
            raise ValueError(f"keep[{name!r}] has {k.numel()} entries but the layer has {t.shape[0]} channels")
        masks[name] = gran.channel_mask(k, t.shape)
        if not followers:
            continue
        prefix = name[: -len(t.attr)]
        if effective(t.module, "bias") is not None:
            masks[prefix + "bias"] = k.clone()
        bn = bns.get(name)
        if bn is not None:
            bn_name = names[id(bn)]
            for attr in ("weight", "bias"):
                if effective(bn, attr) is not None:
                    masks[f"{bn_name}.{attr}"] = k.clone()
    return masks


def _kept_channels(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], -1).any(dim=1)


# --------------------------------------------------------------------------- Network Slimming

def network_slimming(
    model: nn.Module,
    train_loader: Batches,
    *,
    strength: float = 1e-4,
    epochs: int = 5,
    lr: float = 1e-3,
    sparsity: float = 0.5,
    finetune_steps: int = 100,
    finetune_lr: float | None = None,
    seed: int = 0,
    optimizer: str = "adam",
    mask_followers: bool = True,
    test_loader: Batches | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Network Slimming (Liu et al. 2017): sparsity training, channel pruning by ``|gamma|``, fine-tuning.

    1. Train ``epochs`` epochs with cross-entropy + ``bn_l1_penalty(model, strength)`` (adding the
       penalty to the loss is the same as adding ``strength * sign(gamma)`` to the gamma
       gradients, which is what the paper does). Liu et al. use SGD and ``strength`` 1e-4 -- 1e-5;
       with the default Adam the penalty acts faster (Adam normalises the step size).
    2. ``prunekit.prune(model, sparsity, criterion="bn_scale", granularity="channel",
       scope="global", missing="skip")``: the fraction ``sparsity`` of all channels that have a
       BatchNorm goes, ranked by ``|gamma|`` across layers (the paper's global percentile
       threshold). Layers without a BatchNorm (classifier Linears) are never pruned. With
       ``mask_followers`` the BatchNorm's gamma and beta of a removed channel are masked too, so
       the channel is dead (otherwise beta would still pass through the ReLU).
    3. Fine-tune ``finetune_steps`` steps (:func:`prunekit.train.fine_tune`; 0 skips it).

    Returns ``(model, history)``; ``history`` holds ``"train"`` (per-epoch records),
    ``"gamma_before"`` / ``"gamma_after"`` (``{bn_name: |gamma|}`` before and after sparsity
    training, for the chapter's histogram), ``"masks"``, ``"channel_sparsity"`` (achieved, over
    the pruned layers) and ``"finetune"`` (per-step losses). All arguments are checked before the
    model is touched.
    """
    check_model(model)
    strength = check_nonneg("strength", strength)
    epochs = check_int("epochs", epochs, 1)
    lr = check_positive("lr", lr)
    sparsity = check_sparsity(sparsity)
    finetune_steps = check_int("finetune_steps", finetune_steps, 0)
    finetune_lr = lr if finetune_lr is None else check_positive("finetune_lr", finetune_lr)
    seed = check_int("seed", seed, 0)
    bn_l1_penalty(model, 0.0)  # raises if there is no BatchNorm
    if not score(model, "bn_scale", missing="skip"):
        raise ValueError("network_slimming: no prunable layer is followed by a BatchNorm")

    gamma_before = {n: g.detach().abs().clone() for n, g in bn_gammas(model).items()}
    hist = train(model, train_loader, epochs=epochs, lr=lr, optimizer=optimizer, seed=seed, progress=progress,
                 regularizer=lambda m: bn_l1_penalty(m, strength), test_loader=test_loader)
    gamma_after = {n: g.detach().abs().clone() for n, g in bn_gammas(model).items()}
    masks = prune(model, sparsity, criterion="bn_scale", granularity="channel", scope="global", missing="skip")
    if mask_followers:
        keep = {n: _kept_channels(m) for n, m in masks.items()}
        extra = {k: v for k, v in channel_masks(model, keep).items() if k not in masks}
        apply_masks(model, extra)
        now = get_masks(model)
        masks = {n: now[n] for n in {**masks, **extra}}   # the masks on the model (earlier ones stay)
    kept = [_kept_channels(masks[n]) for n in masks if n.endswith("weight") and masks[n].dim() > 1]
    total = sum(k.numel() for k in kept)
    achieved = 1.0 - sum(int(k.sum()) for k in kept) / total if total else 0.0
    losses = []
    if finetune_steps > 0:
        losses = fine_tune(model, train_loader, steps=finetune_steps, lr=finetune_lr, optimizer=optimizer, seed=seed)
    return model, {"train": hist, "gamma_before": gamma_before, "gamma_after": gamma_after, "masks": masks,
                   "channel_sparsity": achieved, "finetune": losses}

"""Seeded training and evaluation loops with tqdm progress bars.

:func:`train` is prunekit's one training loop: :func:`fine_tune` is ``train(steps=...)``, and
the methods that learn while training (Network Slimming, L0 gates, straight-through masks,
pruning schedules) plug into it with ``regularizer=``, ``callback=`` and ``param_groups=``.
By default ``train`` and ``fine_tune`` optimise *all* of ``model.parameters()`` with
cross-entropy. A
model pruned with :mod:`torch.nn.utils.prune` (or ``prunekit.apply_masks``, which is
compatible) computes ``weight = weight_orig * weight_mask`` in a forward pre-hook, so the
gradient of the pruned entries is zero through the mask and pruned weights stay exactly zero
in the effective weight, whatever the optimizer does to ``weight_orig``.

Determinism: ``train(..., seed=s)`` seeds Python, NumPy and torch and re-seeds the training
loader's shuffling generator (when it has one), so the same model, data and seed give the same
weights on the same machine, however often the loader was iterated before.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._validate import check_int, check_positive

__all__ = [
    "StepInfo",
    "set_seed",
    "train",
    "fine_tune",
    "evaluate",
    "evaluate_loss",
    "evaluate_metrics",
    "make_optimizer",
]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = (None, "cosine")


@dataclass
class StepInfo:
    """What a training ``callback`` receives after every optimizer step."""

    epoch: int  # 0-based epoch: pass over the loader (fine_tune and steps= cycle through it)
    step: int  # 0-based global step count, counting this step
    loss: float  # this batch's loss (including the regularizer)
    model: nn.Module
    optimizer: torch.optim.Optimizer


def set_seed(seed: int, loader: Any = None) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA), and the shuffling
    generator of ``loader`` (a ``DataLoader`` built with ``generator=``) if one is given.

    ``train(..., seed=None)`` leaves all of them alone: seed first with this, then build what
    must be drawn from the seeded stream (random initialisations), then train.
    """
    seed = check_int("seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if loader is not None:
        _reseed_loader(loader, seed)


def make_optimizer(
    model: nn.Module, optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, *,
    param_groups: Sequence[dict[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """Build ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9) over ``model.parameters()``.

    ``param_groups`` (torch's list of ``{"params": [...], "lr": ..., ...}``) replaces
    ``model.parameters()``, e.g. to train extra parameters (gates, mask scores) with their own
    learning rate; ``lr`` and ``weight_decay`` are then the defaults of the groups.
    """
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    lr = check_positive("lr", lr)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if param_groups is None:
        params: Any = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
    else:
        params = _check_param_groups(param_groups)
    name = optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _check_param_groups(groups: Any) -> list[dict[str, Any]]:
    if isinstance(groups, (str, bytes, dict)) or not isinstance(groups, Sequence):
        raise TypeError(f"param_groups must be a list of dicts {{'params': [...], 'lr': ...}}, got "
                        f"{type(groups).__name__}")
    out = []
    for i, g in enumerate(groups):
        if not isinstance(g, dict) or "params" not in g:
            raise TypeError(f"param_groups[{i}] must be a dict with a 'params' entry, got {g!r}")
        params = list(g["params"])
        if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
            raise ValueError(f"param_groups[{i}]['params'] must be a non-empty list of tensors that require grad")
        if "lr" in g:
            check_positive(f"param_groups[{i}]['lr']", g["lr"])
        out.append({**g, "params": params})
    if not out:
        raise ValueError("param_groups must hold at least one group")
    return out


def _reseed_loader(loader: Any, seed: int) -> None:
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def _num_batches(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _passes(loader: Batches, epochs: int | None, steps: int | None) -> Iterator[tuple[int, Any]]:
    """``(pass, batch)``: ``epochs`` passes over ``loader``, or as many as ``steps`` batches need."""
    done = 0
    for epoch in itertools.count():
        if epochs is not None and epoch == epochs:
            return
        empty = True
        for batch in loader:
            empty = False
            yield epoch, batch
            done += 1
            if steps is not None and done == steps:
                return
        if empty:
            raise ValueError("train_loader yielded no batches")


def train(
    model: nn.Module,
    train_loader: Batches,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int | None = 0,
    progress: bool = True,
    weight_decay: float = 0.0,
    callback: Callable[[StepInfo], None] | None = None,
    lr_schedule: str | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    test_loader: Batches | None = None,
    *,
    steps: int | None = None,
    param_groups: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` with cross-entropy for ``epochs`` epochs (or ``steps`` steps); return the history.

    The one training loop of prunekit: :func:`fine_tune`, Network Slimming, the L0 gates and
    the straight-through masks (:mod:`prunekit.methods.learned`) all run on it. Each step is
    ``loss = cross_entropy(model(inputs), targets) [+ regularizer(model)]``, ``zero_grad``,
    ``backward``, ``optimizer.step()``, the learning-rate schedule, then ``callback``.

    Args:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        seed: seeds Python/NumPy/torch and the loader's shuffling (see the module docstring).
            The model's initial weights are *not* touched: seed before building the model.
            ``None``: seed nothing (the caller has, e.g. with :func:`set_seed`).
        progress: show a tqdm progress bar (``False`` for tests and quiet runs).
        callback: called after every optimizer step with a :class:`StepInfo`, e.g. to update
            masks during training (gradual magnitude pruning, RigL).
        lr_schedule: ``None`` (constant) or ``"cosine"`` (cosine decay to 0 over all steps).
        regularizer: ``model -> scalar tensor`` added to the loss (e.g. an L1 penalty on
            BatchNorm scales for Network Slimming). It is called once per step, after the
            forward pass, so a stateful one can count the steps.
        test_loader: if given, test accuracy is evaluated after every epoch.
        steps: train for exactly this many optimizer steps instead of ``epochs`` epochs,
            cycling through ``train_loader`` (``epochs`` is then ignored).
        param_groups: optimise these parameter groups (see :func:`make_optimizer`) instead of
            ``model.parameters()``.

    Returns:
        One dict per epoch (pass over ``train_loader``; with ``steps`` the last one may be
        partial): ``{"epoch", "loss", "acc"}`` (mean training loss and running training
        accuracy over the epoch), plus ``"test_acc"`` when ``test_loader`` is given. The model
        is left in eval mode. Arguments are checked before the model is touched.
    """
    if steps is None:
        epochs = check_int("epochs", epochs, minimum=1)
    else:
        steps = check_int("steps", steps, minimum=1)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    for name, fn in (("callback", callback), ("regularizer", regularizer)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    opt = make_optimizer(model, optimizer, lr, weight_decay, param_groups=param_groups)
    if seed is not None:
        set_seed(seed, train_loader)
    n_batches = _num_batches(train_loader)
    total = steps if steps is not None else (epochs * n_batches if n_batches else None)
    scheduler = None
    if lr_schedule == "cosine":
        if total is None:
            raise ValueError("lr_schedule='cosine' needs a train_loader with a len() (or steps=)")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    history: list[dict[str, float]] = []
    running = [0.0, 0, 0, 0]  # loss sum, correct, seen, batches of the current epoch

    def close(epoch: int) -> None:
        loss_sum, correct, seen, batches = running
        entry = {"epoch": epoch + 1, "loss": loss_sum / batches, "acc": correct / seen}
        if test_loader is not None:
            entry["test_acc"] = evaluate(model, test_loader)
            model.train()
        history.append(entry)
        running[:] = [0.0, 0, 0, 0]

    step, current = 0, 0
    model.train()
    bar = tqdm(total=total, disable=not progress, desc="train")
    try:
        for epoch, (inputs, targets) in _passes(train_loader, None if steps is not None else epochs, steps):
            if epoch != current:
                close(current)
                current = epoch
            logits = model(inputs)
            loss_t = nn.functional.cross_entropy(logits, targets)
            if regularizer is not None:
                loss_t = loss_t + regularizer(model)
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            loss = float(loss_t.detach())
            running[0] += loss
            running[1] += int((logits.detach().argmax(1) == targets).sum())
            running[2] += int(targets.numel())
            running[3] += 1
            step += 1
            if callback is not None:
                callback(StepInfo(epoch, step, loss, model, opt))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{running[1] / running[2]:.3f}")
        if running[3]:
            close(current)
    finally:
        bar.close()
    model.eval()
    return history


def fine_tune(
    model: nn.Module,
    loader: Batches,
    steps: int = 100,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = False,
    weight_decay: float = 0.0,
    callback: Callable[[StepInfo], None] | None = None,
) -> list[float]:
    """Train for ``steps`` optimizer steps (cycling through ``loader``); return per-step losses.

    :func:`train` with ``steps=``. Used after pruning to recover accuracy. With masks applied
    through :mod:`torch.nn.utils.prune`-style reparametrisation, pruned weights stay zero (see
    the module docstring). The model is left in eval mode.
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    losses: list[float] = []

    def record(info: StepInfo) -> None:
        losses.append(info.loss)
        if callback is not None:
            callback(info)

    train(model, loader, lr=lr, optimizer=optimizer, seed=seed, progress=progress, weight_decay=weight_decay,
          callback=record, steps=steps)
    return losses


@torch.no_grad()
def evaluate_metrics(model: nn.Module, loader: Batches) -> dict[str, float]:
    """Return ``{"accuracy", "loss", "n"}`` of ``model`` on ``loader`` (in eval mode).

    ``loss`` is the mean cross-entropy per example. The model's train/eval mode is restored.
    """
    was_training = model.training
    model.eval()
    correct, total_loss, n = 0, 0.0, 0
    try:
        for inputs, targets in loader:
            logits = model(inputs)
            total_loss += float(nn.functional.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(1) == targets).sum())
            n += int(targets.numel())
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("loader yielded no examples")
    return {"accuracy": correct / n, "loss": total_loss / n, "n": n}


def evaluate(model: nn.Module, loader: Batches) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, a float in [0, 1]."""
    return evaluate_metrics(model, loader)["accuracy"]


def evaluate_loss(model: nn.Module, loader: Batches) -> float:
    """Mean cross-entropy of ``model`` on ``loader``."""
    return evaluate_metrics(model, loader)["loss"]

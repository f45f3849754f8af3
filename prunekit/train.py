"""Seeded training and evaluation loops with tqdm progress bars.

``train`` and ``fine_tune`` optimise *all* of ``model.parameters()`` with cross-entropy. A
model pruned with :mod:`torch.nn.utils.prune` (or ``prunekit.apply_masks``, which is
compatible) computes ``weight = weight_orig * weight_mask`` in a forward pre-hook, so the
gradient of the pruned entries is zero through the mask and pruned weights stay exactly zero
in the effective weight, whatever the optimizer does to ``weight_orig``.

Determinism: ``train(..., seed=s)`` seeds Python, NumPy and torch and re-seeds the training
loader's shuffling generator (when it has one), so the same model, data and seed give the same
weights on the same machine, however often the loader was iterated before.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

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

    epoch: int  # 0-based epoch (0 for fine_tune)
    step: int  # 0-based global step count, counting this step
    loss: float  # this batch's loss (including the regularizer)
    model: nn.Module
    optimizer: torch.optim.Optimizer


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return int(seed)


def _check_positive(name: str, value: Any, integer: bool) -> Any:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    what = "a positive int" if integer else "a positive number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if not value > 0 or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value) if integer else float(value)


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and CUDA)."""
    seed = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(
    model: nn.Module, optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Build ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9) over ``model.parameters()``."""
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    lr = _check_positive("lr", lr, integer=False)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad=True)")
    name = optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _reseed_loader(loader: Any, seed: int) -> None:
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def _num_batches(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _step(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    opt: torch.optim.Optimizer,
    regularizer: Callable[[nn.Module], torch.Tensor] | None,
) -> tuple[float, int, int]:
    logits = model(inputs)
    loss = nn.functional.cross_entropy(logits, targets)
    if regularizer is not None:
        loss = loss + regularizer(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    correct = int((logits.detach().argmax(1) == targets).sum())
    return float(loss.detach()), correct, int(targets.numel())


def train(
    model: nn.Module,
    train_loader: Batches,
    epochs: int = 5,
    lr: float = 1e-3,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = True,
    weight_decay: float = 0.0,
    callback: Callable[[StepInfo], None] | None = None,
    lr_schedule: str | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    test_loader: Batches | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` with cross-entropy for ``epochs`` epochs; return the per-epoch history.

    Args:
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        seed: seeds Python/NumPy/torch and the loader's shuffling (see the module docstring).
            The model's initial weights are *not* touched: seed before building the model.
        progress: show a tqdm progress bar (``False`` for tests and quiet runs).
        callback: called after every optimizer step with a :class:`StepInfo`, e.g. to update
            masks during training (gradual magnitude pruning, RigL).
        lr_schedule: ``None`` (constant) or ``"cosine"`` (cosine decay to 0 over all steps).
        regularizer: ``model -> scalar tensor`` added to the loss (e.g. an L1 penalty on
            BatchNorm scales for Network Slimming).
        test_loader: if given, test accuracy is evaluated after every epoch.

    Returns:
        One dict per epoch: ``{"epoch", "loss", "acc"}`` (mean training loss and running
        training accuracy over the epoch), plus ``"test_acc"`` when ``test_loader`` is given.
        The model is left in eval mode.
    """
    epochs = _check_positive("epochs", epochs, integer=True)
    seed = _check_seed(seed)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    set_seed(seed)
    _reseed_loader(train_loader, seed)
    n_batches = _num_batches(train_loader)
    scheduler = None
    if lr_schedule == "cosine":
        if n_batches is None:
            raise ValueError("lr_schedule='cosine' needs a train_loader with a len()")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * n_batches)
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    bar = tqdm(total=epochs * n_batches if n_batches else None, disable=not progress, desc="train")
    try:
        for epoch in range(epochs):
            total_loss, correct, seen, batches = 0.0, 0, 0, 0
            for inputs, targets in train_loader:
                loss, c, n = _step(model, inputs, targets, opt, regularizer)
                if scheduler is not None:
                    scheduler.step()
                total_loss, correct, seen, batches = total_loss + loss, correct + c, seen + n, batches + 1
                step += 1
                if callback is not None:
                    callback(StepInfo(epoch, step, loss, model, opt))
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", acc=f"{correct / seen:.3f}")
            if batches == 0:
                raise ValueError("train_loader yielded no batches")
            entry = {"epoch": epoch + 1, "loss": total_loss / batches, "acc": correct / seen}
            if test_loader is not None:
                entry["test_acc"] = evaluate(model, test_loader)
                model.train()
            history.append(entry)
    finally:
        bar.close()
    model.eval()
    return history


def _cycle(loader: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("loader yielded no batches")


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

    Used after pruning to recover accuracy. With masks applied through
    :mod:`torch.nn.utils.prune`-style reparametrisation, pruned weights stay zero (see the
    module docstring). The model is left in eval mode.
    """
    steps = _check_positive("steps", steps, integer=True)
    seed = _check_seed(seed)
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    set_seed(seed)
    _reseed_loader(loader, seed)
    losses: list[float] = []
    model.train()
    batches = _cycle(loader)
    for step in tqdm(range(steps), disable=not progress, desc="fine-tune"):
        inputs, targets = next(batches)
        loss, _, _ = _step(model, inputs, targets, opt, None)
        losses.append(loss)
        if callback is not None:
            callback(StepInfo(0, step + 1, loss, model, opt))
    model.eval()
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

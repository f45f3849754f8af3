"""What the eight contrast experiments share: the pretrained model, its data, fine-tuning and
evaluation, so that every pair is measured with the same budget and the same recipe."""

from __future__ import annotations

import copy
import functools
from typing import Any

from torch import nn

from ... import train, zoo

__all__ = ["GRID", "MODEL", "accuracy", "digits_loaders", "fine_tune", "pretrained", "row"]

#: The sparsities every pair reports (the chapter's explorer shows these); a pair may add more.
GRID: tuple[float, ...] = (0.5, 0.7, 0.9)
#: The network most pairs prune: zoo's SmallCNN (16-32-64, BatchNorm) trained on 8x8 digits.
MODEL = "cnn-digits"


@functools.lru_cache(maxsize=4)
def digits_loaders(seed: int = 0, batch_size: int = 64) -> tuple[Any, Any]:
    """``(train_loader, test_loader)`` of the digits split the zoo's CNN was trained on; the
    split is fixed (seed 0), the loader's shuffling is reseeded by every :func:`fine_tune`."""
    return zoo.loaders(MODEL, seed=seed, batch_size=batch_size)


@functools.lru_cache(maxsize=8)
def _trained(name: str, seed: int) -> nn.Module:
    return zoo.retrain(name, seed)


def pretrained(seed: int, name: str = MODEL) -> nn.Module:
    """A fresh copy of zoo checkpoint ``name``'s network trained with its recipe from ``seed``
    (eval mode; seed 0 is the shipped checkpoint, bit for bit). Every seed of a contrast
    starts from its own pretrained network, so the spread includes the pretraining's. Trained
    once per process (about 3 s for the CNN), then copied."""
    return copy.deepcopy(_trained(name, seed))


def fine_tune(model: nn.Module, steps: int, seed: int, lr: float = 1e-3, loader: Any = None) -> nn.Module:
    """Fine-tune ``model`` for ``steps`` Adam steps on the digits training split (masks stay)."""
    if steps > 0:
        train.fine_tune(model, loader if loader is not None else digits_loaders()[0],
                        steps=steps, lr=lr, seed=seed)
    return model


def accuracy(model: nn.Module, loader: Any = None) -> float:
    """Test accuracy on the digits test split (450 images), rounded to 6 digits."""
    return round(train.evaluate(model, loader if loader is not None else digits_loaders()[1]), 6)


def row(setting: str, sparsity: float, **metrics: Any) -> dict[str, Any]:
    """One result row: the setting, the sparsity (rounded) and the metrics."""
    return {"setting": setting, "sparsity": round(float(sparsity), 4), **metrics}

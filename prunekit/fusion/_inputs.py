"""Input batches for the fusion methods that only run a model forward (calibration, adaptive BN)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def input_batches(name: str, batches: Any) -> list[torch.Tensor]:
    """The input tensors of ``batches``: one tensor, or an iterable of tensors or of
    ``(inputs, targets)`` pairs (a DataLoader); ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(batches, torch.Tensor):
        return [batches]
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Iterable):
        raise TypeError(f"{name} must be a tensor of inputs or an iterable of batches (tensors or (inputs, targets) "
                        f"pairs), got {type(batches).__name__}")
    out = []
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} batches must be tensors or (inputs, ...) pairs, got {type(x).__name__}")
        out.append(x)
    if not out:
        raise ValueError(f"{name} must hold at least one batch")
    return out

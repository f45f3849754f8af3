"""Prune, then quantize after the fact, or fine-tune with the quantizer in the loop?

The book's chapter "Fusion" quantizes a channel-pruned, compacted, fine-tuned CNN to int8 by
static post-training quantization (PTQ, :func:`prunekit.fusion.quantize_int8`): the pruned
network recovers in float, and only then meets the int8 grid. The alternative puts the
quantizer into the recovery: the fine-tuning after pruning runs with fake quantization in
the forward pass and the straight-through estimator in the backward pass
(quantization-aware training, Jacob et al. 2018; :func:`prunekit.fusion.prepare_qat_int8`),
so the kept weights adapt to the pruned structure *and* to their int8 rounding at once.

What is measured, per seed (``pretrained(seed)`` of :mod:`.contrasts.common`: the zoo's
SmallCNN on 8x8 digits, trained from that seed) and per fraction ``s`` of filters removed
(``sparsities``): L1-norm filter pruning of every convolution, ``s`` of each layer's filters
(:func:`prunekit.experiments.fusion.l1_channels`), compacted; then three settings from
that same compacted network, with the same fine-tuning budget (``steps`` Adam steps,
learning rate ``lr``, the same batches in the same order):

* ``fp32``: fine-tuned in float, kept in float (the reference);
* ``prune → fine-tune → int8 (PTQ)``: the ``fp32`` model, quantized with
  ``calibration_batches`` training batches;
* ``prune → QAT fine-tune → int8``: the same steps with fake int8 quantization in the loop,
  the observers and batch-norm statistics frozen for the last ``1 - freeze_at`` of the steps,
  then converted.

Metrics: test ``accuracy`` and ``bytes`` (:func:`prunekit.fusion.state_dict_bytes`, the size
of ``torch.save`` of the state dict, names and quantization parameters included).
Simplification: the pruning itself is one-shot and float; only the recovery sees the
quantizer (quantization-aware *fine-tuning* of a pruned network, not pruning decisions made
under quantization).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from torch import nn

from prunekit import train
from prunekit.fusion import convert_int8, freeze_qat, prepare_qat_int8, quantize_int8, state_dict_bytes

from . import runner
from .fusion import l1_channels
from .contrasts.common import GRID, accuracy, digits_loaders, pretrained, row

__all__ = ["CONFIG", "QUICK", "SETTINGS", "EXPERIMENT", "trial", "calibration_batches"]

#: The three settings, in table order.
SETTINGS: tuple[str, str, str] = ("fp32", "prune → fine-tune → int8 (PTQ)", "prune → QAT fine-tune → int8")

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": list(GRID),
    "steps": 300,
    "lr": 1e-3,
    "calibration_batches": 8,
    "freeze_at": 0.75,
    "backend": "x86",
}

QUICK: dict[str, Any] = {"sparsities": [0.5], "steps": 10, "calibration_batches": 2}


def calibration_batches(n: int, seed: int) -> list:
    """The first ``n`` input batches of the digits training loader, its shuffling seeded by ``seed``."""
    loader = digits_loaders()[0]
    train.set_seed(seed, loader)
    return [x for x, _ in itertools.islice(loader, n)]


def _fine_tune(model: nn.Module, cfg: dict[str, Any], seed: int, freeze_step: int | None = None) -> None:
    """``cfg["steps"]`` Adam steps on the digits training split, batches ordered by ``seed``;
    a QAT model is frozen (:func:`freeze_qat`) after step ``freeze_step``."""
    def freeze(info: train.StepInfo) -> None:
        if info.step + 1 == freeze_step:
            freeze_qat(info.model)

    train.fine_tune(model, digits_loaders()[0], steps=cfg["steps"], lr=cfg["lr"], seed=seed,
                    callback=freeze if freeze_step is not None else None)


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: for each sparsity, the three settings' accuracy and bytes."""
    dense = pretrained(seed)
    rows = []
    for s in cfg["sparsities"]:
        pruned = l1_channels(dense, s)
        fp32 = copy.deepcopy(pruned)
        _fine_tune(fp32, cfg, seed)
        ptq = quantize_int8(fp32, calibration_batches(cfg["calibration_batches"], seed), backend=cfg["backend"])
        qat = prepare_qat_int8(pruned, backend=cfg["backend"])
        _fine_tune(qat, cfg, seed, freeze_step=max(1, round(cfg["freeze_at"] * cfg["steps"])))
        qat_int8 = convert_int8(qat)
        for setting, m in zip(SETTINGS, (fp32, ptq, qat_int8)):
            rows.append(row(setting, s, accuracy=accuracy(m), bytes=state_dict_bytes(m)))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="prune-quantize-order",
    title="Channel pruning then int8: post-training quantization vs quantization-aware fine-tuning",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"), metrics=("accuracy", "bytes")))

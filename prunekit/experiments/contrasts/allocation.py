"""Layer-wise vs global pruning: who decides how much each layer loses?

**Question.** At the same overall sparsity, should every layer get its own budget, fixed
before any score is compared (layer-wise), or should one ranking over all layers decide
(global), so that the budget flows to where the scores are low?

**The survey's framing** (Cheng, Zhang & Shi 2024, "A Survey on Deep Neural Network
Pruning", layer-wise vs global pruning): global ranking adapts the sparsity of each layer and
usually gives better accuracy at moderate sparsity, but raw scores have different scales in
different layers, so it can over-prune some layers -- up to *layer collapse*, a layer
with (almost) nothing left -- unless the scores are normalised (LAMP) or the per-layer
budget is chosen by a rule that protects small layers (ERK).

**Settings** (all unstructured, magnitude-based, one shot, on the pretrained CNN):

* layer-wise -- ``"uniform"``: every prunable tensor loses the fraction ``s``
  (``scope="layer"``);
  ``"ERK"``: the per-layer densities of the Erdős–Rényi-kernel rule of Evci, Gale, Menick,
  Castro & Elsen, "Rigging the Lottery: Making All Tickets Winners", ICML 2020
  (:func:`prunekit.allocation.erk`: density proportional to (Σ dims)/(Π dims) of the weight,
  scaled to the overall budget, a layer that would exceed 1 made dense), then magnitude
  within each layer;
* global -- ``"global magnitude"``: one threshold on ``|w|`` over all tensors (Han, Pool, Tran
  & Dally 2015; ``scope="global"``); ``"LAMP"``: the layer-adaptive magnitude score of Lee,
  Park, Mo, Ahn & Shin, "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021
  (in each layer, weights sorted by ascending ``|w|``, score ``w_u² / Σ_{v≥u} w_v²``),
  ranked globally.

**Budget made equal.** The same prunable weights (every Conv and Linear weight, 27,920; biases
and BatchNorm are not pruned), the same overall sparsity (the global settings remove exactly
``round(s·N)`` of the ``N`` weights; uniform and ERK remove ``round(s_l·n_l)`` in each layer,
which sums to ``s·N`` up to one weight per layer), then the same ``finetune_steps`` Adam steps
on the same batches with the masks held fixed.

**First and last layer.** prunekit treats no layer specially: its default prunable set holds
the first convolution (144 weights) and the classifier (640 weights) like any other, and
``scope="layer"`` prunes them at ``s`` too. We keep that for all four settings, so every setting
prunes the same set. (RigL's own uniform baseline keeps the first layer dense; ERK gives the
small first and last layers a high density by its formula.)

**Metrics.** ``accuracy_oneshot`` (after pruning, no fine-tuning), ``accuracy`` (after
fine-tuning), ``min_layer_density`` (the smallest fraction of weights any prunable tensor
keeps: near zero means a layer is collapsing) and, as a non-metric field, ``layer_sparsity``
``{parameter name: fraction removed}``.

**Toy-scale simplifications.** Five prunable tensors of very different sizes (144 to 18,432
weights) on 8×8 digits; one-shot pruning and a short fine-tuning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import prunekit as pk
from prunekit import train
from prunekit.allocation import erk, to_sparsity

from .. import runner
from .common import GRID, accuracy, fine_tune, pretrained, row

__all__ = ["CONFIG", "QUICK", "SETTINGS", "SIDES", "SIDE_OF", "EXPERIMENT", "trial", "prune_with",
           "layer_densities"]

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "sparsities": [*GRID, 0.95, 0.98],
    "finetune_steps": 150,
}

QUICK: dict[str, Any] = {"finetune_steps": 3}

#: setting -> (criterion, scope); ERK's per-layer sparsities are computed in :func:`prune_with`.
SETTINGS: dict[str, tuple[str, str]] = {
    "uniform": ("magnitude", "layer"),
    "ERK": ("magnitude", "layer"),
    "global magnitude": ("magnitude", "global"),
    "LAMP": ("lamp", "global"),
}
SIDES = ("layer-wise", "global")
SIDE_OF = {"uniform": "layer-wise", "ERK": "layer-wise", "global magnitude": "global",
           "LAMP": "global"}


def prune_with(model: nn.Module, setting: str, sparsity: float) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place to ``sparsity`` with ``setting`` (a key of :data:`SETTINGS`);
    returns the masks."""
    criterion, scope = SETTINGS[setting]
    target: float | dict[str, float] = sparsity
    if setting == "ERK":
        shapes = {n: tuple(s.shape) for n, s in pk.score(model, "magnitude").items()}
        target = to_sparsity(erk(shapes, 1.0 - sparsity))
    return pk.prune(model, target, criterion, scope=scope)


def layer_densities(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of weights each mask keeps."""
    return {n: float(m.sum()) / m.numel() for n, m in masks.items()}


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: every setting of :data:`SETTINGS` at every sparsity of ``cfg["sparsities"]``."""
    train.set_seed(seed)
    rows = []
    for s in cfg["sparsities"]:
        for setting in SETTINGS:
            m = pretrained(seed)
            masks = prune_with(m, setting, s)
            dens = layer_densities(masks)
            oneshot = accuracy(m)
            fine_tune(m, cfg["finetune_steps"], seed)
            rows.append(row(setting, s, accuracy=accuracy(m), accuracy_oneshot=oneshot,
                            min_layer_density=round(min(dens.values()), 6),
                            layer_sparsity={n: round(1 - d, 6) for n, d in dens.items()}))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="layerwise-vs-global",
    title="Layer-wise (uniform, ERK) vs global (magnitude, LAMP) allocation of one-shot magnitude pruning",
    trial=trial,
    config=CONFIG,
    quick=QUICK,
    keys=("setting", "sparsity"),
    metrics=("accuracy", "accuracy_oneshot", "min_layer_density"),
))

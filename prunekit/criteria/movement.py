"""Movement pruning: weights that move away from zero during fine-tuning are kept.

Sanh, Wolf & Rush 2020, *Movement Pruning: Adaptive Sparsity by Fine-Tuning* (NeurIPS). The
importance score of a weight accumulates, over the fine-tuning steps t,

    S = - sum_t (dL/dW)^(t) * W^(t)

(the closed form of the learned scores of hard movement pruning with a straight-through
mask, up to the score learning rate). ``-g*w > 0`` when the gradient step ``-lr*g`` pushes w
away from 0 (|w| grows): such weights are kept; weights that shrink towards 0 go first.

* :class:`MovementTracker` accumulates S during *your* training loop, from the gradient of
  every backward pass and the weights at that moment (before the optimiser updates them).
* The registry entry ``"movement"`` is the one-step approximation on given ``data``: the
  weights do not move, and S = ``- sum_b g_b * w`` over the batches (which is the first-order
  Taylor estimate of the loss increase when w is removed, signed). It needs ``data`` and
  takes ``batches=`` and ``loss_fn=`` like the other gradient criteria.

The paper's *soft* variant (a threshold on sigmoid(S) plus a regulariser) and its cubic
sparsity schedule belong to the training loop, not to the criterion.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..core.targets import Target, find_targets
from .registry import register
from ._common import check_batches, check_loss_fn, summed_over_batches, weight_leaves

__all__ = ["movement", "MovementTracker"]


@register("movement", description="movement -sum_t g*w (Sanh et al. 2020); here one step: summed over the data batches",
          needs_data=True, reference="sanh2020movement")
def movement(model: nn.Module, targets: list[Target], data: Iterable, *, batches: int | None = None,
             loss_fn=None) -> dict[str, torch.Tensor]:
    batches, loss_fn = check_batches(batches), check_loss_fn(loss_fn)
    with weight_leaves(targets) as leaves:
        acc = summed_over_batches(model, leaves, data, batches, loss_fn, lambda g, w: -(g * w))
    return {t.name: a for t, a in zip(targets, acc)}


class MovementTracker:
    """Accumulate movement scores ``S = -sum_t g_t * w_t`` while a model trains.

    A gradient hook on each target parameter (``weight_orig`` for a masked model) adds
    ``-grad * w`` every time a backward pass reaches it, with ``w`` the effective weight at
    that moment. So: call ``loss.backward()`` then ``optimizer.step()`` as usual; gradient
    accumulation over several backward passes is counted correctly (each pass adds its own
    gradient). For a masked weight the gradient of ``weight_orig`` is ``g * mask`` and the
    effective weight is 0 where masked, so masked weights score 0.

    >>> import torch, torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with MovementTracker(model) as tracker:
    ...     for _ in range(3):
    ...         opt.zero_grad()
    ...         nn.functional.cross_entropy(model(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
    ...         opt.step()
    >>> sorted(tracker.scores()), tracker.steps
    (['0.weight', '2.weight'], 3)
    """

    def __init__(self, model: nn.Module, include=None, exclude=None) -> None:
        self.targets = find_targets(model, include=include, exclude=exclude)
        self._scores: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self.steps = 0  # backward passes seen (counted on the first target)
        self.reset()
        self.attach()

    def reset(self) -> None:
        """Set all scores to zero."""
        self._scores = {t.name: torch.zeros(t.shape, dtype=t.parameter.dtype, device=t.parameter.device)
                        for t in self.targets}
        self.steps = 0

    def attach(self) -> None:
        """(Re-)install the gradient hooks (done by the constructor)."""
        if self._handles:
            return
        for i, t in enumerate(self.targets):
            def hook(grad, _t=t, _first=(i == 0)):
                with torch.no_grad():
                    self._scores[_t.name] -= grad.detach() * _t.tensor.detach()
                if _first:
                    self.steps += 1
                return None
            self._handles.append(t.parameter.register_hook(hook))

    def remove(self) -> None:
        """Remove the hooks; the scores stay available."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def scores(self) -> dict[str, torch.Tensor]:
        """A copy of the accumulated scores ``{param_name: S}`` (higher = kept)."""
        return {k: v.clone() for k, v in self._scores.items()}

    def __enter__(self) -> "MovementTracker":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

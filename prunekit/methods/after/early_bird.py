"""Early-bird tickets: the channel mask settles early in training.

You, Li, Xu, Fu, Wang, Chen, Baraniuk, Wang & Lin, *Drawing Early-Bird Tickets: Towards More
Efficient Training of Deep Networks* (ICLR 2020). After every epoch, take the channel mask
that Network Slimming's criterion would prune at ratio ``p`` (the ``p`` fraction of channels
with the smallest BatchNorm scale ``|gamma|``, one global ranking; Liu et al. 2017), and
measure how far it moved: the *mask distance* between two masks is their Hamming distance
normalised by the number of entries. Once the newest mask is within ``epsilon`` (0.1) of each
of the previous ``window - 1`` masks (a FIFO queue of ``window = 5`` masks), the ticket is
drawn: training can stop, the network is pruned with that mask and the small network is
trained instead.

* :func:`mask_distance` -- the normalised Hamming distance;
* :func:`bn_channel_mask` -- the BN-scaling channel mask at a ratio;
* :func:`early_bird_epoch` -- the detection rule on a recorded sequence of masks;
* :class:`EarlyBird` -- the same rule as a :func:`prunekit.train.train` callback.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ..._validate import check_int, check_model, check_number, check_sparsity
from ...allocation import allocate
from ...core.targets import effective

__all__ = ["mask_distance", "bn_channel_mask", "early_bird_epoch", "EarlyBird"]

Masks = Mapping[str, torch.Tensor]


def _as_masks(arg: str, masks: object) -> dict[str, torch.Tensor]:
    if isinstance(masks, torch.Tensor):
        masks = {"": masks}
    if not isinstance(masks, Mapping):
        raise TypeError(f"{arg} must be a dict {{name: bool tensor}} or a tensor, got {type(masks).__name__}")
    out = {}
    for k, m in masks.items():
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{arg}[{k!r}] must be a torch.Tensor, got {type(m).__name__}")
        if m.dtype != torch.bool:
            if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"{arg}[{k!r}] must be a mask: bool, or only 0 and 1")
            m = m.bool()
        out[k] = m
    return out


def mask_distance(masks_a: Masks | torch.Tensor, masks_b: Masks | torch.Tensor) -> float:
    """The normalised Hamming distance between two masks (You et al. 2020): the fraction of
    entries, over all masked tensors together, that one mask keeps and the other prunes.

    ``masks_a``/``masks_b``: ``{name: bool tensor}`` with the same names and shapes (or two
    tensors of one shape); 0/1 tensors are accepted. 0 for identical masks, 1 for
    complementary ones.

    >>> import torch
    >>> a = {"w": torch.tensor([True, True, False, False])}
    >>> b = {"w": torch.tensor([True, False, False, True])}
    >>> mask_distance(a, b)
    0.5
    """
    a, b = _as_masks("masks_a", masks_a), _as_masks("masks_b", masks_b)
    if a.keys() != b.keys():
        raise ValueError(f"masks_a and masks_b must name the same tensors; only in masks_a: "
                         f"{sorted(a.keys() - b.keys())}, only in masks_b: {sorted(b.keys() - a.keys())}")
    total = differ = 0
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"masks_a[{k!r}] has shape {tuple(a[k].shape)} but masks_b[{k!r}] has shape "
                             f"{tuple(b[k].shape)}")
        total += a[k].numel()
        differ += int((a[k] != b[k].to(a[k].device)).sum())
    if total == 0:
        raise ValueError("masks_a and masks_b hold no entries: the distance is undefined")
    return differ / total


def bn_channel_mask(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """The channel mask of Network Slimming at pruning ratio ``ratio``, as You et al. draw it.

    Every BatchNorm with a scale (``affine=True``; read through its mask if it has one)
    contributes its channels; the ``round(ratio * C)`` channels with the smallest ``|gamma|``
    over all ``C`` of them are pruned (one global ranking, ties to the earlier channel, at
    least one channel kept: :func:`prunekit.allocation.allocate`). Returns ``{"<bn
    module>.weight": bool [channels]}`` (True = kept). ``ValueError`` if the model has no
    such BatchNorm.
    """
    check_model(model)
    ratio = check_sparsity(ratio, "ratio")
    gammas = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            g = effective(m, "weight")
            if g is not None:
                gammas[f"{name}.weight" if name else "weight"] = g.detach().abs().float()
    if not gammas:
        raise ValueError("model has no BatchNorm with a scale (affine=True): the early-bird channel mask ranks "
                         "BatchNorm scales; pass mask_fn= to EarlyBird for another mask")
    return allocate(gammas, ratio, scope="global")


def _check_window(window: object, epsilon: object) -> tuple[int, float]:
    return (check_int("window", window, minimum=2),
            check_number("epsilon", epsilon, low=0.0, high=1.0, low_open=True))


def _spread(queue: Sequence[dict[str, torch.Tensor]]) -> float:
    """Max distance between the newest mask of ``queue`` and each earlier one."""
    return max(mask_distance(queue[-1], m) for m in list(queue)[:-1])


def early_bird_epoch(masks: Sequence[Masks | torch.Tensor], *, window: int = 5,
                     epsilon: float = 0.1) -> int | None:
    """The first position in ``masks`` at which the early-bird ticket is drawn, or ``None``.

    ``masks[i]`` is the mask recorded after epoch ``i + 1``. Position ``i`` (with ``i >=
    window - 1``) draws the ticket when ``max_j mask_distance(masks[i], masks[j]) < epsilon``
    over the ``window - 1`` masks before it, ``j = i - window + 1 .. i - 1`` (the FIFO queue of
    You et al. 2020; their code compares the newest mask with each queued one, as here, and
    accepts a distance equal to ``epsilon``, where this rule, like the paper's text, asks for
    a smaller one). The ticket is ``masks[i]``.

    >>> import torch
    >>> seq = [torch.tensor([i % 2 == 0, True, True, True]) for i in range(3)]     # flips
    >>> seq += [torch.tensor([True, True, True, True])] * 4                         # settles
    >>> early_bird_epoch(seq, window=3, epsilon=0.2)
    4
    """
    window, epsilon = _check_window(window, epsilon)
    if isinstance(masks, (Mapping, torch.Tensor)) or not isinstance(masks, Sequence):
        raise TypeError(f"masks must be a sequence of masks (one per epoch), got {type(masks).__name__}")
    queue: deque = deque(maxlen=window)
    for i, m in enumerate(masks):
        queue.append(_as_masks(f"masks[{i}]", m))
        if len(queue) == window and _spread(queue) < epsilon:
            return i
    return None


class EarlyBird:
    """Detect the early-bird ticket while training (You et al. 2020).

    Call :meth:`update` once per epoch (``True`` when the ticket is drawn), or pass the
    object as ``callback=`` to :func:`prunekit.train.train` with ``steps_per_epoch`` (the
    loader's length): it then updates after every ``steps_per_epoch`` optimiser steps, i.e.
    at the end of every epoch. Each update records the mask -- :func:`bn_channel_mask` at
    ``ratio``, or ``mask_fn(model)`` (e.g. a magnitude mask for a network without
    BatchNorm; ``ratio`` must then be ``None``) -- and applies :func:`early_bird_epoch`'s rule
    to the last ``window`` masks.

    Attributes:
        epoch: the number of updates (epochs) after which the ticket was drawn, ``None`` before.
        ticket: the mask drawn then (``{name: bool tensor}``), ``None`` before.
        distances: after every update, the max distance of the newest mask to the others in
            the queue (``nan`` until ``window`` masks are queued); it keeps being recorded
            after the ticket is drawn.

    Training does not stop by itself: check ``epoch`` (or the return value of ``update``) and
    stop, then prune with ``ticket``.
    """

    def __init__(self, ratio: float | None = 0.5, *, window: int = 5, epsilon: float = 0.1,
                 steps_per_epoch: int | None = None,
                 mask_fn: Callable[[nn.Module], Masks] | None = None) -> None:
        self.window, self.epsilon = _check_window(window, epsilon)
        if mask_fn is None:
            if ratio is None:
                raise ValueError("ratio must be a number in [0, 1) (the fraction of channels pruned), or None "
                                 "together with mask_fn=")
            self.ratio: float | None = check_sparsity(ratio, "ratio")
        else:
            if not callable(mask_fn):
                raise TypeError(f"mask_fn must be a callable mask_fn(model) -> masks, got {type(mask_fn).__name__}")
            if ratio is not None:
                raise ValueError("ratio is used by the default BN-scaling mask only: pass ratio=None with mask_fn=")
            self.ratio = None
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch,
                                                                               minimum=1)
        self.mask_fn = mask_fn
        self.queue: deque = deque(maxlen=self.window)
        self.distances: list[float] = []
        self.epoch: int | None = None
        self.ticket: dict[str, torch.Tensor] | None = None

    def mask(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The current mask of ``model`` (cloned)."""
        if self.mask_fn is None:
            return bn_channel_mask(model, self.ratio)
        return {k: v.clone() for k, v in _as_masks("mask_fn(model)", self.mask_fn(model)).items()}

    def update(self, model: nn.Module) -> bool:
        """Record ``model``'s mask (one epoch); ``True`` exactly when this update draws the ticket."""
        self.queue.append(self.mask(model))
        spread = _spread(self.queue) if len(self.queue) == self.window else math.nan
        self.distances.append(spread)
        if self.epoch is None and spread < self.epsilon:
            self.epoch, self.ticket = len(self.distances), {k: v.clone() for k, v in self.queue[-1].items()}
            return True
        return False

    @property
    def drawn(self) -> bool:
        """Whether the ticket has been drawn."""
        return self.epoch is not None

    def __call__(self, info) -> None:
        """The :func:`prunekit.train.train` callback: update at the end of every epoch."""
        if self.steps_per_epoch is None:
            raise ValueError("EarlyBird as a train callback needs steps_per_epoch= (the number of batches per "
                             "epoch, len(train_loader)); or call update(model) once per epoch")
        if info.step % self.steps_per_epoch == 0:
            self.update(info.model)

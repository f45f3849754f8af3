"""Dynamic sparse training: the per-layer drop-and-grow updates of SET and RigL.

A sparse network trains with a fixed number of active connections; every ΔT steps each layer
drops the k active connections of smallest magnitude and grows k others, so the sparsity never
changes while the connectivity moves.

* SET -- Mocanu, Mocanu, Stone, Nguyen, Gibescu & Liotta, "Scalable training of artificial
  neural networks with adaptive sparse connectivity inspired by network science", Nature
  Communications 2018: grow at random.
* RigL -- Evci, Gale, Menick, Castro & Elsen, "Rigging the lottery: making all tickets
  winners", ICML 2020: grow where the dense gradient is largest; the drop fraction decays
  with :func:`prunekit.schedules.cosine_decay`.

The rules below follow RigL's reference implementation (``SparseSETOptimizer._get_update_op``
and ``SparseRigLOptimizer.generic_mask_update`` in ``rigl/sparse_optimizers.py``,
google-research/rigl):

* k = floor(``drop_fraction`` · active) connections are dropped and k grown;
* the dropped ones are the active connections of smallest ``|weight|``;
* the grown ones are chosen among *all* connections inactive after the drop, the just-dropped
  ones included (the reference gives only the kept connections the lowest grow score), so a
  connection may be dropped and grown back in one update;
* the number of active connections never changes.

Ties are broken by position, not at random: among equal ``|weight|`` the connection with the
lowest flat (row-major) index is dropped first -- the tie rule of :mod:`prunekit.allocation`
-- and among equal ``|grad|`` the lowest index is grown first (the order of TensorFlow's
``top_k`` in the reference). The reference adds N(0, 1e-5) noise to the drop scores instead,
which breaks ties at random.

Who zeroes the grown weights: these functions only return masks. Grown connections start at
zero in both papers, so the caller zeroes the weights that :func:`new_connections` marks --
``new_mask & ~old_mask``, i.e. *not* a connection dropped and grown back in the same update,
which keeps its value as in the reference (``reinit_when_same=False``) -- and resets their
optimiser state (the reference zeroes the momentum of new connections).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real

import torch
from torch import nn

from ...core.masks import apply_masks, get_masks, remove_masks
from ...schedules import cosine_decay
from ...train import StepInfo
from ..before.random import prune_random

__all__ = ["rigl_update", "set_update", "new_connections", "drop_count", "DynamicSparsity"]


def _check_tensor(name: str, value: object, like: torch.Tensor | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if like is not None and value.shape != like.shape:
        raise ValueError(f"{name} must have the weight's shape {tuple(like.shape)}, got {tuple(value.shape)}")
    if name != "mask" and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if name != "mask" and torch.isnan(value).any():
        raise ValueError(f"{name} contains NaN")
    return value


def _check_mask(mask: object, weight: torch.Tensor) -> torch.Tensor:
    mask = _check_tensor("mask", mask, weight)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = active), got dtype {mask.dtype}")
    return mask


def _check_fraction(drop_fraction: object) -> float:
    if isinstance(drop_fraction, bool) or not isinstance(drop_fraction, Real):
        raise TypeError(f"drop_fraction must be a number in [0, 1], got {drop_fraction!r}")
    f = float(drop_fraction)
    if not 0.0 <= f <= 1.0:  # also NaN
        raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction!r}")
    return f


def drop_count(mask: torch.Tensor, drop_fraction: float) -> int:
    """k = floor(``drop_fraction`` · number of active connections), in float64 arithmetic."""
    return math.floor(_check_fraction(drop_fraction) * int(mask.sum()))


def _drop(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """Flat mask of the connections kept after dropping the k active ones of smallest |w|."""
    flat = mask.reshape(-1)
    active = flat.nonzero().squeeze(1)
    order = torch.sort(weight.detach().reshape(-1)[active].abs(), stable=True).indices
    kept = flat.clone()
    kept[active[order[:k]]] = False
    return kept


def rigl_update(weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor,
                drop_fraction: float) -> torch.Tensor:
    """One RigL update of one layer (Evci et al. 2020); returns the new bool mask.

    Drops the k = floor(``drop_fraction`` · active) active connections of smallest ``|weight|``
    and grows the k connections of largest ``|grad|`` among those inactive after the drop
    (just-dropped ones included). See the module docstring for ties and for zeroing the grown
    weights.

    Args:
        weight: the layer's weights (only the active entries are ranked, so the raw
            ``weight_orig`` or the masked ``weight`` give the same result).
        mask: bool, same shape, True = active.
        grad: the *dense* gradient of the loss with respect to the effective (masked) weight,
            same shape. With :mod:`torch.nn.utils.prune` masks, ``weight_orig.grad`` is that
            gradient times the mask -- zero at every inactive connection, useless for growing;
            take ``module.weight.grad`` after ``module.weight.retain_grad()``, or compute it with
            :func:`torch.autograd.grad` on ``module.weight``.
        drop_fraction: in [0, 1].

    Raises:
        TypeError / ValueError naming the argument: non-tensors, wrong shapes or dtypes, NaN,
        ``drop_fraction`` outside [0, 1].

    >>> w = torch.tensor([0.5, -0.1, 0.0, 0.3, 0.0, 0.0])
    >>> m = torch.tensor([True, True, False, True, False, False])
    >>> g = torch.tensor([0.0, 0.0, 0.2, 0.0, 0.9, 0.1])
    >>> rigl_update(w, m, g, 0.5).tolist()   # k = 1: drop -0.1, grow the |grad| = 0.9
    [True, False, False, True, True, False]
    """
    weight = _check_tensor("weight", weight)
    mask = _check_mask(mask, weight)
    grad = _check_tensor("grad", grad, weight)
    k = drop_count(mask, drop_fraction)
    kept = _drop(weight, mask, k)
    candidates = (~kept).nonzero().squeeze(1)
    order = torch.sort(grad.detach().reshape(-1)[candidates].abs(), descending=True, stable=True).indices
    new = kept
    new[candidates[order[:k]]] = True
    return new.view(mask.shape)


def set_update(weight: torch.Tensor, mask: torch.Tensor, drop_fraction: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One SET update of one layer (Mocanu et al. 2018); returns the new bool mask.

    Drops the k = floor(``drop_fraction`` · active) active connections of smallest ``|weight|``
    (as RigL's SET baseline does; the paper drops the ζ smallest positive and the ζ largest
    negative weights separately) and grows k connections drawn uniformly without replacement
    among those inactive after the drop (just-dropped ones included), with ``torch.randperm``
    on ``generator`` (``None``: torch's default generator). The same generator state gives the
    same mask.

    >>> w = torch.tensor([0.5, -0.1, 0.0, 0.3])
    >>> m = torch.tensor([True, True, False, True])
    >>> new = set_update(w, m, 0.5, torch.Generator().manual_seed(0))
    >>> int(new.sum()), bool(new[0] and new[3])
    (3, True)
    """
    weight = _check_tensor("weight", weight)
    mask = _check_mask(mask, weight)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    k = drop_count(mask, drop_fraction)
    kept = _drop(weight, mask, k)
    candidates = (~kept).nonzero().squeeze(1)
    device = generator.device if generator is not None else torch.device("cpu")
    pick = torch.randperm(candidates.numel(), generator=generator, device=device)[:k].to(candidates.device)
    new = kept
    new[candidates[pick]] = True
    return new.view(mask.shape)


def new_connections(old_mask: torch.Tensor, new_mask: torch.Tensor) -> torch.Tensor:
    """``new_mask & ~old_mask``: the grown connections whose weights (and optimiser state) the
    caller sets to zero. A connection dropped and grown back in one update is not among them."""
    if not (isinstance(old_mask, torch.Tensor) and isinstance(new_mask, torch.Tensor)):
        raise TypeError("old_mask and new_mask must be bool tensors")
    if old_mask.dtype != torch.bool or new_mask.dtype != torch.bool:
        raise TypeError(f"old_mask and new_mask must be bool tensors, got {old_mask.dtype} and {new_mask.dtype}")
    if old_mask.shape != new_mask.shape:
        raise ValueError(f"old_mask and new_mask must have one shape, got {tuple(old_mask.shape)} "
                         f"and {tuple(new_mask.shape)}")
    return new_mask & ~old_mask


METHODS = ("rigl", "set")


class DynamicSparsity:
    """Dynamic sparse training of ``model`` at a fixed ``density``: RigL or SET as a callback.

    At construction the chosen weights are masked at random with the layer densities of
    ``distribution`` (:func:`prunekit.methods.before.random.prune_random`; RigL's ERK
    initialisation by default). Then after optimiser step ``t`` -- whenever ``t`` is a multiple
    of ``update_every`` (ΔT) and ``t < end_step`` (T_end) -- every masked layer gets one
    :func:`rigl_update` (``method="rigl"``) or :func:`set_update` (``method="set"``) with the
    drop fraction ``cosine_decay(t, initial=drop_fraction, end_step=end_step)``; grown
    connections start at zero (weight and the optimiser's per-weight state, e.g. Adam's
    moments, as the reference resets momentum), a connection dropped and grown back keeps its
    value, and every layer's number of active connections never changes (Evci et al. 2020,
    Algorithm 1; Mocanu et al. 2018).

    RigL grows by the dense gradient of the last backward pass, the gradient with respect to
    the masked weight ``module.weight``; a forward hook on each masked module retains it
    (``retain_grad``), so every masked module must be called through its ``forward``
    (``nn.MultiheadAttention`` reads ``out_proj.weight`` directly: leave it out with
    ``exclude=``); a missing gradient raises ``RuntimeError``. Tied (shared) parameters are not
    supported. One difference from the reference: it skips the optimiser step at a mask-update
    iteration, while here the update follows that step (the gradient is the step's, the
    magnitudes are those after it).

    Use it as ``callback=`` of :func:`prunekit.train.train`, or call :meth:`update` with the
    step count and the optimiser after each ``optimizer.step()``; :meth:`remove` takes the
    hooks off (the masks stay).

    Attributes:
        history: ``[(step, drop_fraction, {name: connections grown}), ...]`` per update (grown =
            :func:`new_connections`; a connection dropped and grown back is not counted).
    """

    def __init__(self, model: nn.Module, density: float, *, method: str = "rigl", update_every: int = 100,
                 end_step: int, drop_fraction: float = 0.3, distribution: str = "erk", dense: Iterable[str] = (),
                 seed: int = 0, include: Iterable[str] | str | None = None,
                 exclude: Iterable[str] | str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        for name, value in (("update_every", update_every), ("end_step", end_step), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if update_every < 1:
            raise ValueError(f"update_every must be an int >= 1, got {update_every}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed}")
        cosine_decay(0, initial=drop_fraction, end_step=end_step)  # checks drop_fraction and end_step
        if get_masks(model):
            raise ValueError(f"model is already masked ({sorted(get_masks(model))[:4]}...): dynamic sparse "
                             "training starts from a dense model")
        self.model, self.method = model, method.lower()
        self.update_every, self.end_step, self.drop_fraction = int(update_every), int(end_step), float(drop_fraction)
        self._generator = torch.Generator().manual_seed(int(seed))
        masks = prune_random(model, density, distribution=distribution, seed=int(seed), dense=dense,
                             include=include, exclude=exclude)
        self.names = list(masks)
        self._modules = {n: model.get_submodule(n.rpartition(".")[0]) for n in self.names}
        self._attr = {n: n.rpartition(".")[2] for n in self.names}
        self._hooks = [m.register_forward_hook(self._retain) for m in {id(m): m for m in self._modules.values()}.values()]
        self.history: list[tuple[int, float, dict[str, int]]] = []

    def _retain(self, module: nn.Module, args: object, output: object) -> None:
        for n in self.names:
            if self._modules[n] is module:
                w = getattr(module, self._attr[n])
                if w.requires_grad and not w.is_leaf:
                    w.retain_grad()

    def remove(self) -> None:
        """Take off the gradient-retaining hooks (the masks stay on the model)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def __call__(self, info: StepInfo) -> None:
        """The :func:`prunekit.train.train` callback: :meth:`update` at ``info.step``."""
        self.update(info.step, info.optimizer)

    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Drop and grow in every layer if ``step`` is an update step; True if it was."""
        if step % self.update_every or not 0 < step < self.end_step:
            return False
        fraction = cosine_decay(step, initial=self.drop_fraction, end_step=self.end_step)
        old = get_masks(self.model)
        new = {}
        for n in self.names:  # every new mask first, so that an error changes nothing
            module, attr = self._modules[n], self._attr[n]
            weight = getattr(module, attr + "_orig")
            if self.method == "rigl":
                w = getattr(module, attr)
                grad = w.grad if w.retains_grad else None
                if grad is None:
                    raise RuntimeError(f"no gradient for {n!r}: call update after a backward pass through the model")
                new[n] = rigl_update(weight, old[n], grad, fraction)
            else:
                new[n] = set_update(weight, old[n], fraction, self._generator)
        moved = {}
        for n in self.names:
            weight = getattr(self._modules[n], self._attr[n] + "_orig")
            grown = new_connections(old[n], new[n])
            moved[n] = int(grown.sum())
            with torch.no_grad():
                weight[grown] = 0.0
            if optimizer is not None:
                for value in optimizer.state.get(weight, {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == weight.shape:
                        value[grown] = 0
        remove_masks(self.model, self.names)
        apply_masks(self.model, new)
        self.history.append((step, fraction, moved))
        return True

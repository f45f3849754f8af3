"""Write your own pruning criterion: the public toolkit.

A criterion is a function ``fn(model, targets, **kwargs) -> {name: score}``: ``targets`` is
the list of :class:`Target` s (the prunable weights :func:`prunekit.score` chose), and the
function returns one score tensor per target, keyed by ``target.name``, of the weight's
shape (``level="weight"``) or of shape ``[out_channels]`` (``level="channel"``). **A higher
score means more important**: the lowest scores are pruned first. Register it with
:func:`register` and :func:`prunekit.score`, :func:`prunekit.prune` and
:func:`prunekit.make_masks` use it like a built-in criterion.

A data-free criterion only reads the weights:

>>> import torch, torch.nn as nn, prunekit as pk
>>> from prunekit.criteria import api
>>> @api.register("squared", description="w^2 (orders weights as magnitude does)")
... def squared(model, targets):
...     return {t.name: t.tensor.detach() ** 2 for t in targets}
>>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> masks = pk.prune(net, 0.5, "squared", scope="layer")
>>> int((~masks["0.weight"]).sum()), int((~masks["2.weight"]).sum())
(6, 3)
>>> api.unregister("squared")

In a notebook or a test, :func:`registered` adds a criterion for a ``with`` block only (a
cell can then be run twice; a second :func:`register` of the same name raises
``ValueError`` unless ``replace=True``):

>>> with api.registered("cubed", lambda model, targets: {t.name: t.tensor.detach().abs() ** 3
...                                                      for t in targets}, description="|w|^3"):
...     masks = pk.prune(net, 0.5, "cubed", scope="layer")
>>> "cubed" in pk.criteria.available()
False

A data-driven criterion (``needs_data=True``) receives ``data=`` (an iterable of
``(inputs, targets)`` batches) and usually the gradient of the loss with respect to each
weight. :func:`weight_leaves` gives tensors that autograd can differentiate (the
*effective* weights, also on a model that is already masked) and
:func:`summed_over_batches` runs the forward and backward passes and sums a per-weight
term over the batches: SNIP's ``|g w|`` is, for instance,

>>> @api.register("my_snip", description="|g*w| summed over batches", needs_data=True)
... def my_snip(model, targets, data, *, batches=None, loss_fn=None):
...     with api.weight_leaves(targets) as leaves:
...         terms = api.summed_over_batches(model, leaves, data, lambda g, w: g * w,
...                                         batches=batches, loss_fn=loss_fn)
...     return {t.name: term.abs() for t, term in zip(targets, terms)}
>>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
>>> mine = pk.score(net, "my_snip", data=data)
>>> ref = pk.score(net, "snip", data=data)
>>> all(torch.allclose(mine[k], ref[k]) for k in ref)
True
>>> api.unregister("my_snip")

:func:`prunekit.score` calls the function with gradients enabled, in eval mode (or
``mode="train"``), and afterwards restores everything the criterion may have touched
(weights, BatchNorm statistics, ``requires_grad`` flags, ``.grad`` fields, train/eval
mode), so a criterion need not clean up after itself.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from ..core.guards import preserved
from ..core.targets import Target
from . import _common
from .registry import Criterion, register, registered, unregister

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["Criterion", "Target", "register", "registered", "unregister", "weight_leaves",
           "summed_over_batches", "iter_batches", "check_loss_fn", "check_batches",
           "per_channel", "preserved"]


def weight_leaves(targets: list[Target]):
    """Context manager: one tensor per target that autograd can differentiate, to be used
    with :func:`torch.autograd.grad` (or :func:`summed_over_batches`).

    Each tensor is the *effective* weight the forward pass uses: the parameter itself for
    an unmasked layer; for a layer masked by :func:`prunekit.apply_masks` (or
    ``torch.nn.utils.prune``), a copy of ``weight_orig * weight_mask`` that the layer uses
    while the context is open. Gradients are therefore taken with respect to the weight as
    the network sees it, zeros included. Everything is restored when the context closes.

    >>> import torch, torch.nn as nn
    >>> from prunekit.criteria import api
    >>> from prunekit.core.targets import find_targets
    >>> net = nn.Linear(3, 1)
    >>> with api.weight_leaves(find_targets(net)) as (w,):
    ...     (g,) = torch.autograd.grad(net(torch.ones(1, 3)).sum(), [w])
    >>> g.tolist()
    [[1.0, 1.0, 1.0]]
    """
    return _common.weight_leaves(targets)


def summed_over_batches(model: nn.Module, leaves: list[torch.Tensor], data: Iterable,
                        term: Term, *, batches: int | None = None,
                        loss_fn: LossFn | None = None) -> list[torch.Tensor]:
    """For each leaf ``w``: ``sum over the batches of term(g, w)``, where ``g`` is the
    gradient of that batch's loss ``loss_fn(model(inputs), targets)`` with respect to ``w``.

    ``leaves`` come from :func:`weight_leaves`; ``term`` maps ``(g, w)`` (``w`` detached) to
    a tensor: of ``w``'s shape for a weight-level score, ``[out_channels]`` for a
    channel-level one (see :func:`per_channel`). ``batches`` limits how many batches of
    ``data`` are used (default all); ``loss_fn`` defaults to cross-entropy. Raises
    ``ValueError`` if ``data`` yields nothing, and one naming ``data`` (or ``loss_fn``) and
    the batch index when the model or the loss fails on a batch (the original error chained).

    >>> import torch, torch.nn as nn
    >>> from prunekit.criteria import api
    >>> from prunekit.core.targets import find_targets
    >>> net = nn.Linear(2, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.tensor([[1.0, 2.0]]))
    >>> data = [(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 1))] * 3
    >>> mse = nn.functional.mse_loss            # loss (w1 - 0)^2: g = [2, 0] per batch
    >>> with api.weight_leaves(find_targets(net)) as leaves:
    ...     (total,) = api.summed_over_batches(net, leaves, data, lambda g, w: g * w,
    ...                                        loss_fn=mse)
    >>> total.tolist()
    [[6.0, 0.0]]
    """
    batches, loss_fn = check_batches(batches), check_loss_fn(loss_fn)
    if not callable(term):
        raise TypeError(f"term must be a callable term(g, w) -> tensor, got {type(term).__name__}")
    return _common.summed_over_batches(model, list(leaves), data, batches, loss_fn, term)


def iter_batches(data: Iterable, *, batches: int | None = None,
                 device: torch.device | str | None = None) -> Iterator[tuple]:
    """Yield the ``(inputs, targets)`` pairs of ``data``, at most ``batches`` of them, moved
    to ``device`` (``None``: left where they are); for criteria that run their own loop.

    Raises ``TypeError`` if ``data`` is not iterable and ``ValueError`` if it yields nothing
    or an item that is not a pair.

    >>> from prunekit.criteria import api
    >>> pairs = [(torch.zeros(2, 3), torch.zeros(2)) for _ in range(5)]
    >>> len(list(api.iter_batches(pairs, batches=2)))
    2
    """
    return _common.iter_batches(data, check_batches(batches), device)


def check_loss_fn(loss_fn: object) -> LossFn:
    """The loss a criterion should use: ``loss_fn`` itself, or cross-entropy for ``None``.
    ``TypeError`` if it is not callable.

    >>> from prunekit.criteria import api
    >>> api.check_loss_fn(None).__name__
    'cross_entropy'
    """
    return _common.check_loss_fn(loss_fn)


def check_batches(batches: object) -> int | None:
    """``batches`` (how many batches of ``data`` to use) as an int, or ``None`` for all;
    ``TypeError``/``ValueError`` for anything but a positive int or ``None``.

    >>> from prunekit.criteria import api
    >>> api.check_batches(2), api.check_batches(None)
    (2, None)
    """
    return _common.check_batches(batches)


def per_channel(x: torch.Tensor) -> torch.Tensor:
    """Reshape a weight-shaped tensor ``[out, ...]`` to ``[out, rest]``: one row per output
    channel (a 1-D tensor becomes ``[out, 1]``). Reduce the rows to get a channel score.

    >>> from prunekit.criteria import api
    >>> api.per_channel(torch.ones(4, 2, 3, 3)).sum(1).tolist()
    [18.0, 18.0, 18.0, 18.0]
    """
    return _common.per_channel(x)

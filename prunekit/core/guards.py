"""Leave the model be: guards for code that only looks at a model.

* :func:`preserved` restores everything a forward or backward pass may touch (modes,
  parameter and buffer values, BatchNorm statistics, a user's counting buffer,
  ``requires_grad``, ``.grad``);
* :func:`read_only` runs a block in eval mode without autograd, then restores the model
  (``summary``, MAC counts, tracing for ``compact`` and coupled pruning);
* :func:`example_inputs_fit` turns any error of a forward pass on ``example_inputs`` into
  a ``ValueError`` that names the argument.

Low-level: it imports only torch, so every part of prunekit may use it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["preserved", "read_only", "example_inputs_fit", "describe"]


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore everything a criterion (or a forward pass) may touch: train/eval flags,
    parameter and buffer values (BatchNorm running statistics, a user's counting buffer,
    non-persistent buffers too), which tensor each parameter/buffer slot holds,
    ``requires_grad`` flags and ``.grad`` fields.

    Tensors are restored in place, and only if they changed (so their version counters, and
    any autograd graph the caller still holds, are left alone when nothing changed).
    """
    modes = [(m, m.training) for m in model.modules()]
    # every parameter and buffer slot of every module, and each distinct tensor once (tied ones)
    slots = [(d, k, v) for m in model.modules() for d in (m._parameters, m._buffers) for k, v in d.items()]
    values = {id(v): (v, v.detach().clone()) for _, _, v in slots if v is not None}
    params = list(model.parameters())
    flags = [(p, p.requires_grad) for p in params]
    grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
    # plain tensor attributes, e.g. the ``weight = weight_orig * weight_mask`` that
    # torch.nn.utils.prune's hook recomputes at every forward: keep the very same objects
    attrs = [(m, k, v) for m in model.modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for m, k, v in attrs:
            if m.__dict__.get(k) is not v:
                m.__dict__[k] = v
        for d, k, v in slots:
            if d.get(k) is not v:
                d[k] = v
        with torch.no_grad():
            for ref, saved in values.values():
                if ref.shape != saved.shape or ref.dtype != saved.dtype or ref.device != saved.device:
                    ref.data = saved
                elif not torch.equal(ref.detach(), saved):
                    ref.detach().copy_(saved)
        for p, rg in flags:
            p.requires_grad_(rg)
        for p, g, saved in grads:
            p.grad = g
            if g is not None and not torch.equal(g, saved):
                with torch.no_grad():
                    g.copy_(saved)


@contextmanager
def read_only(model: nn.Module) -> Iterator[None]:
    """A block in which ``model`` runs in eval mode without autograd and after which it is
    exactly as before (see :func:`preserved`): for the forward passes of functions that only
    look at a model (``summary``, MAC counts, tracing for ``compact`` and coupled pruning)."""
    with preserved(model), torch.no_grad():
        model.eval()
        yield


def describe(x: object) -> str:
    """``x`` in a few words for an error message: a tensor's shape and dtype, else its type."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        more = ", ..." if len(x) > 3 else ""
        return f"a {type(x).__name__} of {len(x)}: [" + ", ".join(describe(v) for v in x[:3]) + more + "]"
    return f"a {type(x).__name__}"


@contextmanager
def example_inputs_fit(model: nn.Module, example_inputs: object) -> Iterator[None]:
    """Re-raise any error of the block (a forward pass of ``model`` on ``example_inputs``) as a
    ``ValueError`` saying that ``example_inputs`` does not fit the model, chained to the original."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shape, dtype, arity, device: every kind of misfit
        raise ValueError(
            f"example_inputs does not fit the model: {type(model).__name__} raised {type(exc).__name__} "
            f"({exc}) on example_inputs = {describe(example_inputs)}. Pass a batch the model accepts: a "
            "tensor, or a tuple of its positional inputs"
        ) from exc

"""Shared machinery of the criteria: data batches, effective weights as autograd leaves,
"leave the model as it was", the BatchNorm that follows a layer, per-channel activations.

Not public API; the criteria modules use it. Its public part (for writing a criterion of
your own) is :mod:`prunekit.criteria.api`.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from numbers import Integral
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..core.guards import describe as _describe
from ..core.guards import example_inputs_fit, preserved, read_only  # noqa: F401 (used by criteria)
from ..core.graph.queries import following_batchnorm  # noqa: F401 (re-exported for criteria)
from ..core.targets import Target

__all__ = ["check_optional_count", "check_batches", "check_loss_fn", "check_choice",
           "model_device", "iter_batches", "batch_size", "sample", "data_error", "weight_leaves", "grads",
           "forward_loss", "summed_over_batches", "module_names", "out_channels", "per_channel",
           "following_batchnorm", "forward_with_hooks", "channel_activations"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- arguments

def check_optional_count(name: str, value: object, meaning: str, none_means: str) -> int | None:
    """``value`` as a positive int, or ``None``; the error says what the number is and what ``None`` means."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        error = TypeError if isinstance(value, bool) or not isinstance(value, Integral) else ValueError
        raise error(f"{name} must be a positive int ({meaning}) or None ({none_means}), got {value!r}")
    return int(value)


def check_batches(batches: object) -> int | None:
    """``batches``: how many batches of ``data`` to use (``None`` = all)."""
    return check_optional_count("batches", batches, "how many batches of data", "all batches")


def check_loss_fn(loss_fn: object) -> LossFn:
    if loss_fn is None:
        return F.cross_entropy
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable loss_fn(outputs, targets) -> scalar, got {type(loss_fn).__name__}")
    return loss_fn  # type: ignore[return-value]


def check_choice(name: str, value: object, allowed: Iterable[str]) -> str:
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value  # type: ignore[return-value]


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, device) for v in x)
    return x


def iter_batches(data: Iterable, batches: int | None, device: torch.device) -> Iterator[tuple]:
    """Yield ``(inputs, targets)`` from ``data`` (at most ``batches`` of them), on ``device``.

    Raises ``ValueError`` if ``data`` yields nothing or an item is not a pair.
    """
    try:
        it = iter(data)
    except TypeError:
        raise TypeError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}") from None
    n = 0
    for item in itertools.islice(it, batches):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError("data must yield (inputs, targets) pairs; got an item of type "
                             f"{type(item).__name__}" + (f" with {len(item)} entries" if isinstance(item, (tuple, list)) else ""))
        n += 1
        yield _to(item[0], device), _to(item[1], device)
    if n == 0:
        raise ValueError("data yielded no batches: pass data=an iterable of (inputs, targets) batches")


def batch_size(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.shape[0] if x.dim() else 1
    if isinstance(x, (list, tuple)) and x:
        return batch_size(x[0])
    return 1


def sample(x, i: int):
    """The ``i``-th sample of a batch, keeping the batch dimension."""
    if isinstance(x, torch.Tensor):
        return x[i:i + 1]
    if isinstance(x, (list, tuple)):
        return type(x)(sample(v, i) for v in x)
    return x


def data_error(exc: Exception, batch: int | None, inputs: object, outputs: object = None,
               targets: object = None, *, loss: bool = False) -> ValueError:
    """The ``ValueError`` for ``exc``, raised by the model on the ``inputs`` of a batch of
    ``data`` (or, when ``loss``, by ``loss_fn`` on the model's ``outputs`` and the batch's
    ``targets``); it names ``data`` (and ``loss_fn``) and the batch index. Raise it ``from exc``."""
    where = "a batch of data" if batch is None else f"batch {batch} of data"
    if loss:
        return ValueError(
            f"loss_fn(outputs, targets) fails on {where} ({type(exc).__name__}: {exc}); the model's outputs "
            f"are {_describe(outputs)} and the targets {_describe(targets)}: check data's targets (dtype, "
            "range of the class indices) or pass a loss_fn that accepts these outputs and targets")
    return ValueError(
        f"the model fails on the inputs of {where} ({type(exc).__name__}: {exc}); they are "
        f"{_describe(inputs)}: data must yield (inputs, targets) batches whose inputs the model accepts")


# ------------------------------------------------------- effective weights as autograd leaves

@contextmanager
def weight_leaves(targets: list[Target]) -> Iterator[list[torch.Tensor]]:
    """Yield one tensor per target that the model's forward uses as the *effective* weight and
    that autograd can differentiate with respect to (``torch.autograd.grad(loss, leaves)``).

    * unmasked target: the parameter itself (``requires_grad`` is switched on meanwhile);
    * masked target (``torch.nn.utils.prune``'s ``weight_orig * weight_mask``): a leaf copy of
      the effective weight; a forward pre-hook, registered after the pruning hook, makes the
      module use it. Gradients are therefore w.r.t. the effective weight (also at masked
      positions), not w.r.t. ``weight_orig``.

    Nothing accumulates into ``.grad`` as long as callers use ``torch.autograd.grad``.
    """
    leaves: list[torch.Tensor] = []
    handles = []
    flags = []
    saved_attrs = []
    try:
        for t in targets:
            if t.is_masked:
                leaf = t.tensor.detach().clone().requires_grad_(True)
                # every module that uses a shared (tied) parameter reads the same leaf, so
                # the gradient sums the contributions of all its uses
                for use in t.uses:
                    saved_attrs.append((use.module, use.attr, use.module.__dict__.get(use.attr)))

                    def hook(module, args, _leaf=leaf, _attr=use.attr):
                        setattr(module, _attr, _leaf)

                    handles.append(use.module.register_forward_pre_hook(hook))
            else:
                leaf = t.parameter
                flags.append((leaf, leaf.requires_grad))
                leaf.requires_grad_(True)
            leaves.append(leaf)
        yield leaves
    finally:
        for h in handles:
            h.remove()
        for p, rg in flags:
            p.requires_grad_(rg)
        for module, attr, value in saved_attrs:
            if value is None:
                module.__dict__.pop(attr, None)
            else:
                setattr(module, attr, value)


def grads(loss: torch.Tensor, leaves: list[torch.Tensor], create_graph: bool = False) -> list[torch.Tensor]:
    """``d loss / d leaf`` for each leaf (zeros where a leaf does not influence the loss)."""
    gs = torch.autograd.grad(loss, leaves, create_graph=create_graph, allow_unused=True,
                             retain_graph=create_graph or None)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(gs, leaves)]


def forward_loss(model: nn.Module, x, y, loss_fn: LossFn, temperature: float = 1.0,
                 batch: int | None = None) -> torch.Tensor:
    """``loss_fn(model(x) / temperature, y)`` as a 0-d tensor. An error of the model or of the
    loss is re-raised as a ``ValueError`` naming ``data`` (or ``loss_fn``) and ``batch``
    (:func:`data_error`)."""
    try:
        out = model(x)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises on bad inputs
        raise data_error(exc, batch, x) from exc
    try:
        loss = loss_fn(out if temperature == 1.0 else out / temperature, y)
    except Exception as exc:  # noqa: BLE001 - whatever the loss raises on bad targets or outputs
        raise data_error(exc, batch, x, out, y, loss=True) from exc
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    return loss.reshape(())


def summed_over_batches(model: nn.Module, leaves: list[torch.Tensor], data: Iterable, batches: int | None,
                        loss_fn: LossFn, term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        temperature: float = 1.0) -> list[torch.Tensor]:
    """``sum over batches of term(g, w)`` for each leaf ``w``, where ``g`` is the batch's ``d loss / d w``.

    The accumulation loop shared by the gradient criteria (SNIP, Taylor, movement, GraSP).
    """
    acc: list[torch.Tensor] | None = None
    for i, (x, y) in enumerate(iter_batches(data, batches, model_device(model))):
        gs = grads(forward_loss(model, x, y, loss_fn, temperature, batch=i), leaves)
        terms = [term(g, w.detach()) for g, w in zip(gs, leaves)]
        acc = terms if acc is None else [a + t for a, t in zip(acc, terms)]
    return acc


# ----------------------------------------------------------------- structure of the model

def module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def out_channels(t: Target) -> int:
    return t.shape[0] if len(t.shape) else 1


def per_channel(x: torch.Tensor) -> torch.Tensor:
    """``[out, ...]`` -> ``[out, rest]`` (a 1-D tensor becomes ``[out, 1]``)."""
    return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(-1, 1)


def forward_with_hooks(model: nn.Module, data: Iterable, batches: int | None,
                       hooks: list[tuple[nn.Module, Callable, bool]]) -> None:
    """Run ``model`` on the first ``batches`` of ``data`` (no grad) with ``hooks`` attached, then remove them.

    Each hook is ``(module, fn, pre)``: a forward pre-hook when ``pre``, else a forward hook;
    they are removed even when the forward pass raises.
    """
    raised: list[BaseException] = []  # errors of the hooks themselves pass unchanged

    def watched(fn: Callable) -> Callable:
        def hook(*args):
            try:
                return fn(*args)
            except Exception as exc:
                raised.append(exc)
                raise
        return hook

    handles = []
    try:
        for module, fn, pre in hooks:
            handles.append(module.register_forward_pre_hook(watched(fn)) if pre
                           else module.register_forward_hook(watched(fn)))
        with torch.no_grad():
            for i, (x, _) in enumerate(iter_batches(data, batches, model_device(model))):
                try:
                    model(x)
                except Exception as exc:
                    if raised and exc is raised[-1]:
                        raise
                    raise data_error(exc, i, x) from exc
    finally:
        for h in handles:
            h.remove()


def channel_activations(model: nn.Module, targets: list[Target], data: Iterable, batches: int | None,
                        reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``data`` through ``model`` and, for each target, sum ``reduce(a)`` over batches, where
    ``a`` = ReLU(output of the BatchNorm following the layer, else of the layer itself) with the
    channel moved to dim 1: ``[N, C, *spatial]`` (a Linear's last dim is its channel).
    ``reduce`` maps ``a`` to a ``[C]`` tensor (or a tuple of them).
    """
    bns = following_batchnorm(model, targets)
    acc: dict[str, object] = {}

    def make_hook(t: Target, linear_like: bool):
        width = out_channels(t)

        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"activation criteria need a tensor output from the layer of {t.name!r}")
            a = output.detach()
            if linear_like:
                a = a.movedim(-1, 1) if a.dim() > 1 else a.reshape(1, -1)
            if a.dim() < 2 or a.shape[1] != width:
                raise ValueError(f"the output of the layer of {t.name!r} has shape {tuple(output.shape)}; "
                                 f"expected {width} channels (activation criteria score a layer's output channels)")
            r = reduce(torch.relu(a))
            prev = acc.get(t.name)
            if prev is None:
                acc[t.name] = r
            elif isinstance(r, tuple):
                acc[t.name] = tuple(p + q for p, q in zip(prev, r))  # type: ignore[arg-type]
            else:
                acc[t.name] = prev + r  # type: ignore[operator]
        return hook

    hooks = []
    for t in targets:
        bn = bns[t.name]
        watched = bn if bn is not None else t.module
        linear_like = bn is None and isinstance(t.module, nn.Linear)
        if bn is not None and isinstance(bn, nn.BatchNorm1d):
            linear_like = False
        hooks.append((watched, make_hook(t, linear_like), False))
    forward_with_hooks(model, data, batches, hooks)
    missing = [t.name for t in targets if t.name not in acc]
    if missing:
        raise ValueError(f"the layers of {missing} were not called in the forward pass; activation criteria need them")
    return acc  # type: ignore[return-value]

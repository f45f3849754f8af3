"""Masks: apply and remove them, the ``torch.nn.utils.prune`` way.

:func:`apply_masks` uses the same reparametrisation as ``torch.nn.utils.prune``: the
parameter ``weight`` becomes ``weight_orig`` (still trainable), a buffer ``weight_mask``
holds the mask, and a forward pre-hook recomputes ``weight = weight_orig * weight_mask``
before every forward. So ``prune.is_pruned(model)``, ``prune.remove`` and existing code
keep working, and pruned weights stay zero while the model is fine-tuned.

Applying masks twice composes them (logical AND), like torch's ``PruningContainer``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .targets import all_parameters


def _validate(model: nn.Module, masks: object) -> dict[str, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{param_name: bool tensor}}, got {type(masks).__name__}")
    params = all_parameters(model)
    checked = {}
    for name, m in masks.items():
        if name not in params:
            raise ValueError(f"masks names {name!r}, which is not a parameter of the model; "
                             f"parameters are e.g. {list(params)[:5]}")
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"masks[{name!r}] must be a torch.Tensor, got {type(m).__name__}")
        shape = params[name].shape
        if m.shape != shape:
            raise ValueError(f"masks[{name!r}] has shape {tuple(m.shape)} but the parameter has shape {tuple(shape)}")
        if m.dtype != torch.bool:
            if m.is_complex() or not ((m == 0) | (m == 1)).all():
                raise ValueError(f"masks[{name!r}] must be bool (True = kept) or contain only 0 and 1")
            m = m.bool()
        checked[name] = m
    return checked


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Mask the named parameters of ``model`` in place (True = kept); returns ``model``.

    Every mask is validated before anything is changed, so a bad mask leaves the model
    untouched.

    >>> import torch, torch.nn as nn
    >>> from torch.nn.utils import prune
    >>> lin = nn.Linear(2, 2)
    >>> _ = apply_masks(lin, {"weight": torch.tensor([[True, False], [False, True]])})
    >>> prune.is_pruned(lin), lin.weight[0, 1].item() == 0
    (True, True)
    """
    checked = _validate(model, masks)
    params = all_parameters(model)
    for name, m in checked.items():
        t = params[name]
        torch_prune.custom_from_mask(t.module, t.attr, m.to(t.parameter.device))
    _refresh_attention_projections(model)
    return model


def _refresh_out_proj(mha: nn.Module, args) -> None:
    """Forward pre-hook of an ``nn.MultiheadAttention``: recompute ``out_proj.weight`` from its mask.

    ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly instead of calling
    ``out_proj``, so the pre-hook that ``torch.nn.utils.prune`` puts on ``out_proj`` never
    runs, and the masked weight would go stale when the optimiser changes ``weight_orig``.
    """
    for hook in _pruning_hooks(mha.out_proj):
        setattr(mha.out_proj, hook._tensor_name, hook.apply_mask(mha.out_proj))


def _refresh_attention_projections(model: nn.Module) -> None:
    """Give each ``nn.MultiheadAttention`` whose ``out_proj`` is masked the refreshing pre-hook, once."""
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) and _pruning_hooks(m.out_proj):
            if _refresh_out_proj not in m._forward_pre_hooks.values():
                m.register_forward_pre_hook(_refresh_out_proj)


def _pruning_hooks(module: nn.Module) -> list[torch_prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)]


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current masks of ``model`` as bool tensors, by parameter name."""
    return {n: t.mask for n, t in all_parameters(model).items() if t.is_masked}


def remove_masks(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Make pruning permanent: fold masks into the weights and drop hooks and buffers.

    After this the pruned weights are plain zeros in ``weight`` and the model is an
    ordinary ``nn.Module`` again (``prune.is_pruned(model)`` is False). ``names``
    restricts it to some parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    masked = {n: t for n, t in all_parameters(model).items() if t.is_masked}
    chosen = list(masked) if names is None else list(names)
    unknown = [n for n in chosen if n not in masked]
    if unknown:
        raise ValueError(f"names {unknown} are not masked parameters; masked: {list(masked)}")
    for n in chosen:
        t = masked[n]
        torch_prune.remove(t.module, t.attr)
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) and not _pruning_hooks(m.out_proj):
            for key in [k for k, h in m._forward_pre_hooks.items() if h is _refresh_out_proj]:
                del m._forward_pre_hooks[key]
    return model


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of False entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0

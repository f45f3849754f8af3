"""Masks: apply and remove them, the ``torch.nn.utils.prune`` way.

:func:`apply_masks` uses the same reparametrisation as ``torch.nn.utils.prune``: the
parameter ``weight`` becomes ``weight_orig`` (still trainable), a buffer ``weight_mask``
holds the mask, and a forward pre-hook recomputes ``weight = weight_orig * weight_mask``
before every forward. So ``prune.is_pruned(model)``, ``prune.remove`` and existing code
keep working, and pruned weights stay zero while the model is fine-tuned.

Applying masks twice composes them (logical AND), like torch's ``PruningContainer``.
Applying is all-or-nothing: every mask is checked first (name, type, shape, values,
device, and that the module has no ``<name>_orig``/``<name>_mask`` attribute of its own
that the reparametrisation would overwrite), and a failure while applying puts every
module back as it was.

A parameter shared by several modules (tied weights, see :mod:`prunekit.core.targets`) is one
target with one mask: it is applied for every module that uses the parameter, so they all
see the same masked weight, and :func:`remove_masks` leaves them all with the same zeroed
parameter.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .._validate import check_model
from .targets import (Target, Use, _check_names, all_parameters, by_alias, computed_weight_hint, is_masked,
                      pruning_hooks)

__all__ = ["apply_masks", "remove_masks", "get_masks", "check_maskable", "sparsity_of", "copy_model",
           "pruning_hooks"]


def _check_model(model: object) -> nn.Module:
    if isinstance(model, Mapping):
        raise TypeError(f"model must be a torch.nn.Module, got a {type(model).__name__} (a state_dict?): "
                        "load it into its model (model.load_state_dict(...)) and pass the model")
    return check_model(model)


def _module_name(use: Use) -> str:
    return use.name.rpartition(".")[0] or "(the model itself)"


def check_maskable(t: Target) -> None:
    """Raise ``ValueError`` if masking ``t`` would overwrite a module's own ``<attr>_orig``/``<attr>_mask``.

    The reparametrisation adds those two names to every module that uses ``t``. Callers
    that score before applying (``prune``) can call this first, before any expensive work.
    """
    for u in t.uses:
        if is_masked(u.module, u.attr):
            continue
        taken = [a for a in (u.attr + "_orig", u.attr + "_mask") if hasattr(u.module, a)]
        if taken:
            raise ValueError(
                f"masks[{t.name!r}]: module {_module_name(u)!r} ({type(u.module).__name__}) already has "
                f"{' and '.join(repr(a) for a in taken)} of its own, which masking {u.attr!r} the "
                f"torch.nn.utils.prune way ({u.attr}_orig parameter, {u.attr}_mask buffer) would overwrite; "
                "rename that attribute to prune this parameter"
            )


def _check_mask(name: str, m: object, t: Target) -> torch.Tensor:
    """``m`` as a bool mask on ``t``'s device, or a clear error."""
    if not isinstance(m, torch.Tensor):
        raise TypeError(f"masks[{name!r}] must be a torch.Tensor, got {type(m).__name__}")
    shape, device = t.shape, t.parameter.device
    if m.shape != shape:
        raise ValueError(f"masks[{name!r}] has shape {tuple(m.shape)} but the parameter has shape {tuple(shape)}")
    if m.device.type == "meta" and device.type != "meta":
        raise ValueError(f"masks[{name!r}] is on the meta device (it has no values) but the parameter is on "
                         f"{device}; pass a mask on {device} or on the CPU")
    if m.dtype != torch.bool:
        if m.device.type == "meta":
            raise ValueError(f"masks[{name!r}] is on the meta device, where its values cannot be checked: "
                             f"it must have dtype torch.bool, got {m.dtype}")
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"masks[{name!r}] must be bool (True = kept) or contain only 0 and 1, got dtype {m.dtype}")
        m = m.bool()
    try:
        return m.to(device)
    except (RuntimeError, NotImplementedError) as e:
        raise ValueError(f"masks[{name!r}] is on {m.device} and cannot be moved to the parameter's device "
                         f"{device} ({type(e).__name__}: {e}); pass it on {device}") from e


def _validate(model: nn.Module, masks: object) -> list[tuple[Target, torch.Tensor]]:
    """Every mask checked, resolved to its target and moved to its device; nothing is modified."""
    _check_model(model)
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{param_name: bool tensor}}, got {type(masks).__name__}")
    params = all_parameters(model)
    names = by_alias(params)
    checked: dict[str, tuple[str, Target, torch.Tensor]] = {}
    for name, m in masks.items():
        if name not in names:
            raise ValueError(f"masks names {name!r}, which is not a parameter of the model; "
                             f"parameters are e.g. {list(params)[:5]}" + computed_weight_hint(model, [name]))
        t = names[name]
        if t.name in checked:
            raise ValueError(f"masks names the same parameter twice, as {checked[t.name][0]!r} and {name!r} "
                             f"(a parameter shared by several modules: {list(t.aliases)}); give it one mask")
        checked[t.name] = (name, t, _check_mask(name, m, t))
    for _, t, _ in checked.values():
        check_maskable(t)
    return [(t, m) for _, t, m in checked.values()]


class _Saved:
    """What masking can change on one module, to put back if applying fails."""

    def __init__(self, module: nn.Module, attrs: set[str]):
        self.module, self.attrs = module, attrs
        self.parameters = dict(module._parameters)
        self.buffers = dict(module._buffers)
        self.non_persistent = set(module._non_persistent_buffers_set)
        self.hooks = dict(module._forward_pre_hooks)
        self.values = {a: module.__dict__[a] for a in attrs if a in module.__dict__}

    def restore(self) -> None:
        m = self.module
        for now, saved in ((m._parameters, self.parameters), (m._buffers, self.buffers),
                           (m._forward_pre_hooks, self.hooks)):
            now.clear()
            now.update(saved)
        m._non_persistent_buffers_set.clear()
        m._non_persistent_buffers_set.update(self.non_persistent)
        for a in self.attrs:
            m.__dict__.pop(a, None)
        m.__dict__.update(self.values)


@contextmanager
def _all_or_nothing(model: nn.Module, uses: Iterable[Use]) -> Iterator[None]:
    """Context: if its body raises, every module it may have changed is put back as it was."""
    attrs: dict[int, tuple[nn.Module, set[str]]] = {}
    for u in uses:
        attrs.setdefault(id(u.module), (u.module, set()))[1].update({u.attr, u.attr + "_orig", u.attr + "_mask"})
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            attrs.setdefault(id(m), (m, set()))
    saved = [_Saved(m, a) for m, a in attrs.values()]
    try:
        yield
    except BaseException:
        for s in saved:
            s.restore()
        raise


def _mask_use(use: Use, mask: torch.Tensor) -> None:
    """Mask one use (``torch.nn.utils.prune`` composes with a mask it already has).

    A first mask is set up directly, as ``torch.nn.utils.prune.custom_from_mask`` would (the
    same ``<name>_orig`` parameter, ``<name>_mask`` buffer in the parameter's dtype and
    ``CustomFromMask`` forward pre-hook), without its multiplications by a ones tensor; a
    second one goes through torch (a ``PruningContainer``). torch computes the masked
    ``weight`` attribute with autograd history, which makes the model impossible to
    ``copy.deepcopy`` until its next forward pass: it is computed here without history; the
    forward pre-hook recomputes it, with history, at every forward, so training is unaffected.
    """
    m, attr = use.module, use.attr
    orig = m._parameters.get(attr)
    if isinstance(orig, nn.Parameter) and not pruning_hooks(m, attr) and not hasattr(m, attr + "_orig"):
        method = torch_prune.CustomFromMask(mask)
        method._tensor_name = attr
        del m._parameters[attr]
        m.register_parameter(attr + "_orig", orig)
        m.register_buffer(attr + "_mask", mask.to(dtype=orig.dtype))
        with torch.no_grad():
            setattr(m, attr, method.apply_mask(m))
        m.register_forward_pre_hook(method)
        return
    torch_prune.custom_from_mask(m, attr, mask)
    with torch.no_grad():
        for hook in pruning_hooks(m, attr):
            setattr(m, attr, hook.apply_mask(m))


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Mask the named parameters of ``model`` in place (True = kept); returns ``model``.

    Every mask is validated before anything is changed, and applying is all-or-nothing,
    so an error leaves the model untouched. A mask may be keyed by any name of a shared
    (tied) parameter; it is applied for every module that uses it.

    >>> import torch, torch.nn as nn
    >>> from torch.nn.utils import prune
    >>> lin = nn.Linear(2, 2)
    >>> _ = apply_masks(lin, {"weight": torch.tensor([[True, False], [False, True]])})
    >>> prune.is_pruned(lin), lin.weight[0, 1].item() == 0
    (True, True)
    """
    checked = _validate(model, masks)
    with _all_or_nothing(model, [u for t, _ in checked for u in t.uses]):
        for t, m in checked:
            if t.is_masked:  # every use ends with the same mask, even if they had different ones
                m = m & t.mask.to(m.device)
            for u in t.uses:
                _mask_use(u, m)
        _refresh_attention_projections(model)
    return model


def _refresh_out_proj(mha: nn.Module, args) -> None:
    """Forward pre-hook of an ``nn.MultiheadAttention``: recompute ``out_proj.weight`` from its mask.

    ``nn.MultiheadAttention`` reads ``out_proj.weight`` directly instead of calling
    ``out_proj``, so the pre-hook that ``torch.nn.utils.prune`` puts on ``out_proj`` never
    runs, and the masked weight would go stale when the optimiser changes ``weight_orig``.
    """
    for hook in pruning_hooks(mha.out_proj):
        setattr(mha.out_proj, hook._tensor_name, hook.apply_mask(mha.out_proj))


def _refresh_attention_projections(model: nn.Module) -> None:
    """Give each ``nn.MultiheadAttention`` whose ``out_proj`` is masked the refreshing pre-hook, once."""
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) and pruning_hooks(m.out_proj):
            if _refresh_out_proj not in m._forward_pre_hooks.values():
                m.register_forward_pre_hook(_refresh_out_proj)


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The current masks of ``model`` as bool tensors, by parameter name (one per shared parameter)."""
    _check_model(model)
    return {n: t.mask for n, t in all_parameters(model).items() if t.is_masked}


def remove_masks(model: nn.Module, names: Iterable[str] | str | None = None) -> nn.Module:
    """Make pruning permanent: fold masks into the weights and drop hooks and buffers.

    After this the pruned weights are plain zeros in ``weight`` and the model is an
    ordinary ``nn.Module`` again (``prune.is_pruned(model)`` is False). ``names``
    restricts it to some parameters: a list of names, or one name as a string; a name
    given twice (or two names of one shared parameter) counts once. Every module that
    uses a shared parameter keeps using the same, now zeroed, parameter.
    """
    _check_model(model)
    wanted = _check_names("names", names, what="names of masked parameters")
    params = all_parameters(model)
    masked = {n: t for n, t in params.items() if t.is_masked}
    if wanted is None:
        chosen = list(masked.values())
    else:
        aliases = by_alias(params)
        unknown = [n for n in wanted if n not in aliases or not aliases[n].is_masked]
        if unknown:
            raise ValueError(f"names {unknown} are not masked parameters; masked: {list(masked)}")
        chosen = list({aliases[n].name: aliases[n] for n in wanted}.values())
    for t in chosen:
        for u in t.uses:
            if is_masked(u.module, u.attr):
                torch_prune.remove(u.module, u.attr)
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention) and not pruning_hooks(m.out_proj):
            for key in [k for k, h in m._forward_pre_hooks.items() if h is _refresh_out_proj]:
                del m._forward_pre_hooks[key]
    return model


def copy_model(model: nn.Module, fold: bool) -> nn.Module:
    """A deep copy of ``model``; ``model`` is untouched.

    ``torch.nn.utils.prune`` keeps the masked weight ``weight = weight_orig * weight_mask``
    as a non-leaf tensor attribute, which ``copy.deepcopy`` refuses: it is copied detached.
    With ``fold=False`` the copy keeps its masks (``weight_orig``, ``weight_mask``, hooks);
    with ``fold=True`` every mask is folded in (``weight`` becomes a plain parameter equal
    to ``orig * mask``; hooks and buffers gone), as :func:`remove_masks` would do.
    """
    _check_model(model)
    if not isinstance(fold, bool):
        raise TypeError(f"fold must be a bool, got {type(fold).__name__}")
    memo: dict = {}
    for m in model.modules():
        for hook in pruning_hooks(m):
            name = hook._tensor_name
            t = m.__dict__.get(name)
            orig, mask = m._parameters.get(name + "_orig"), m._buffers.get(name + "_mask")
            if fold and isinstance(orig, nn.Parameter) and isinstance(mask, torch.Tensor):
                # copy only the folded weight: orig, mask and the hook's own masks are dropped below
                if id(orig) not in memo:
                    with torch.no_grad():
                        memo[id(orig)] = nn.Parameter(orig.detach() * mask, requires_grad=orig.requires_grad)
                memo[id(mask)] = torch.empty(0)
                for method in getattr(hook, "_pruning_methods", (hook,)):
                    for v in vars(method).values():
                        if isinstance(v, torch.Tensor):
                            memo[id(v)] = torch.empty(0)
                if isinstance(t, torch.Tensor):
                    memo[id(t)] = torch.empty(0)
            elif isinstance(t, torch.Tensor) and not t.is_leaf:
                memo[id(t)] = t.detach().clone()
    work = copy.deepcopy(model, memo)
    if fold:
        for m in work.modules():
            for key, hook in list(m._forward_pre_hooks.items()):
                if not isinstance(hook, torch_prune.BasePruningMethod):
                    continue
                name = hook._tensor_name
                if isinstance(m._parameters.get(name + "_orig"), nn.Parameter) and name + "_mask" in m._buffers:
                    del m._forward_pre_hooks[key]
                    folded = m._parameters.pop(name + "_orig")
                    del m._buffers[name + "_mask"]
                    m.__dict__.pop(name, None)
                    m.register_parameter(name, folded)
            if isinstance(m, nn.MultiheadAttention):
                for key in [k for k, h in m._forward_pre_hooks.items() if h is _refresh_out_proj]:
                    del m._forward_pre_hooks[key]
    return work


def sparsity_of(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of False entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0

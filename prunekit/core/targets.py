"""Which parameters a pruning call acts on.

By default prunekit prunes the ``weight`` of every :class:`torch.nn.Linear` and
convolution layer, the same set ``torch.nn.utils.prune`` users usually pass by hand.
Callers narrow or widen it with ``include=`` / ``exclude=``: lists of parameter
names (``"features.0.weight"``) or ``fnmatch`` patterns (``"features.*"``).

A parameter that ``torch.nn.utils.prune`` has already reparametrised (a ``weight_orig``
parameter, a ``weight_mask`` buffer *and* its forward pre-hook) keeps its logical name
(``"features.0.weight"``), and its *effective* tensor (``orig * mask``) is what criteria
see. A layer's own ``weight_mask`` buffer without the rest is not a mask.

**Shared (tied) parameters.** One ``nn.Parameter`` used by several modules (a language
model's input embedding and output head, or two layers sharing ``.weight``) is *one*
target, named as ``model.named_parameters()`` names it (its first use). Its other names
are :attr:`Target.aliases`, accepted wherever a name is, and every ``(module,
attribute)`` that uses it is in :attr:`Target.uses`. It counts once, gets one mask, and
that mask is applied for every use. A module reused at several places (one ``Linear``
called twice) is one use with several names.

**Computed weights.** A Linear/Conv whose ``weight`` is computed by a parametrization
(``torch.nn.utils.parametrizations.weight_norm``/``spectral_norm``, or the older hooks
``torch.nn.utils.weight_norm``/``spectral_norm``) has no ``weight`` parameter to mask:
the default selection skips it with a ``UserWarning`` that names it. To prune it, remove
the parametrization first (``torch.nn.utils.parametrize.remove_parametrizations``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils import prune as torch_prune
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from .._validate import check_model

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def pruning_hooks(module: nn.Module, attr: str | None = None) -> list[torch_prune.BasePruningMethod]:
    """The ``torch.nn.utils.prune`` forward pre-hooks of ``module`` (those for ``attr`` if given)."""
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, torch_prune.BasePruningMethod)
            and (attr is None or getattr(h, "_tensor_name", None) == attr)]


def is_masked(module: nn.Module, attr: str) -> bool:
    """Whether ``module.<attr>`` carries the whole ``torch.nn.utils.prune`` reparametrisation:
    an ``<attr>_orig`` parameter, an ``<attr>_mask`` buffer and a pruning hook for ``attr``."""
    return (isinstance(module._parameters.get(attr + "_orig"), nn.Parameter)
            and isinstance(module._buffers.get(attr + "_mask"), torch.Tensor)
            and bool(pruning_hooks(module, attr)))


def effective(module: nn.Module, attr: str) -> torch.Tensor | None:
    """``module.<attr>`` as the forward sees it: ``<attr>_orig * <attr>_mask`` when masked."""
    if is_masked(module, attr):
        return getattr(module, attr + "_orig") * getattr(module, attr + "_mask")
    return getattr(module, attr, None)


class Use(NamedTuple):
    """One place where a parameter is used: its full name there, the module, the attribute."""

    name: str
    module: nn.Module
    attr: str


@dataclass(frozen=True)
class Target:
    """One prunable parameter: its logical name, owning module and attribute.

    ``uses`` lists every ``(name, module, attr)`` through which the model uses this
    ``nn.Parameter`` (several for tied weights; the first is ``name``/``module``/``attr``),
    ``aliases`` every name it has. Both default to this one use.
    """

    name: str
    module: nn.Module
    attr: str
    uses: tuple[Use, ...] = ()
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.uses:
            object.__setattr__(self, "uses", (Use(self.name, self.module, self.attr),))
        if not self.aliases:
            object.__setattr__(self, "aliases", tuple(u.name for u in self.uses))

    def _masked_uses(self) -> list[Use]:
        return [u for u in self.uses if is_masked(u.module, u.attr)]

    @property
    def is_masked(self) -> bool:
        """Whether a mask is applied (through at least one use)."""
        return bool(self._masked_uses())

    @property
    def tensor(self) -> torch.Tensor:
        """The effective weight (already multiplied by an existing mask)."""
        if len(self.uses) == 1 or not self.is_masked:
            return effective(self.module, self.attr)
        return self.parameter * self.mask.to(self.parameter.dtype)

    @property
    def parameter(self) -> nn.Parameter:
        """The trainable parameter (``weight_orig`` when masked)."""
        return getattr(self.module, self.attr + "_orig" if is_masked(self.module, self.attr) else self.attr)

    @property
    def shape(self) -> torch.Size:
        return self.parameter.shape

    @property
    def mask(self) -> torch.Tensor | None:
        """The current mask as a bool tensor (kept where every masked use keeps), or ``None``."""
        masks = [u.module._buffers[u.attr + "_mask"].bool() for u in self._masked_uses()]
        if not masks:
            return None
        out = masks[0]
        for m in masks[1:]:
            out = out & m.to(out.device)
        return out


def _check_names(arg: str, value: Iterable[str] | str | None,
                 what: str = "parameter names or fnmatch patterns") -> list[str] | None:
    """``value`` as a list of strings; a single string is a one-element list."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{arg} must be a string or a list of strings ({what}), got {type(value).__name__}") from None
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{arg} must contain strings ({what}), got {n!r}")
    return names


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def _target_matches(t: Target, patterns: Sequence[str]) -> bool:
    return any(_matches(a, patterns) for a in t.aliases)


def _join(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def all_parameters(model: nn.Module) -> dict[str, Target]:
    """Every parameter of ``model`` by logical name (``weight`` for ``weight_orig``).

    One entry per ``nn.Parameter`` object, named as ``model.named_parameters()`` names it;
    a shared (tied) parameter lists all its uses and names (see the module docstring).
    """
    uses: dict[int, dict[tuple[int, str], Use]] = {}
    names: dict[int, dict[str, None]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module._parameters.items():
            if p is None:
                continue
            logical = attr[: -len("_orig")] if attr.endswith("_orig") and is_masked(module, attr[:-5]) else attr
            full = _join(mod_name, logical)
            uses.setdefault(id(p), {}).setdefault((id(module), logical), Use(full, module, logical))
            names.setdefault(id(p), {})[full] = None
    out: dict[str, Target] = {}
    for key, by_use in uses.items():
        first = next(iter(by_use.values()))
        out[first.name] = Target(first.name, first.module, first.attr, tuple(by_use.values()), tuple(names[key]))
    return out


def by_alias(params: dict[str, Target]) -> dict[str, Target]:
    """``{name: target}`` for every name of every target of :func:`all_parameters`."""
    return {a: t for t in params.values() for a in t.aliases}


def computed_weights(model: nn.Module) -> dict[str, str]:
    """``{"<layer>.weight": how}`` for the Linear/Conv layers whose ``weight`` is computed
    (weight_norm, spectral_norm or another parametrization) rather than a parameter."""
    out = {}
    for mod_name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        if parametrize.is_parametrized(module, "weight"):
            kinds = [type(p).__name__ for p in module.parametrizations["weight"]]
            how = " + ".join({"_WeightNorm": "weight_norm", "_SpectralNorm": "spectral_norm"}.get(k, k) for k in kinds)
            out[_join(mod_name, "weight")] = f"a {how} parametrization"
        for h in module._forward_pre_hooks.values():
            if isinstance(h, (WeightNorm, SpectralNorm)) and h.name == "weight":
                kind = "weight_norm" if isinstance(h, WeightNorm) else "spectral_norm"
                out[_join(mod_name, "weight")] = f"torch.nn.utils.{kind}"
    return out


_UNPARAMETRIZE = ("remove the parametrization first (torch.nn.utils.parametrize.remove_parametrizations, "
                  "or torch.nn.utils.remove_weight_norm/remove_spectral_norm)")


def _describe_computed(computed: dict[str, str], names: Iterable[str]) -> str:
    return ", ".join(f"{n!r} (computed by {computed[n]})" for n in names)


def computed_weight_hint(model: nn.Module, names: Iterable[str]) -> str:
    """A clause to append to an error about ``names`` if some are computed weights; else ``""``."""
    computed = computed_weights(model)
    hits = [n for n in names if n in computed]
    if not hits:
        return ""
    return f"; {_describe_computed(computed, hits)} cannot be masked: {_UNPARAMETRIZE}"


def find_targets(
    model: nn.Module,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> list[Target]:
    """Prunable parameters of ``model`` in ``named_parameters`` order.

    Without ``include``, the weights of Linear and Conv layers: a tied parameter is one
    target when any of its uses is one, and weights computed by a parametrization are
    skipped with a ``UserWarning``. A pattern in ``include`` or ``exclude`` that matches
    no parameter is an error (a typo would otherwise prune nothing, or protect nothing).
    A parameter is chosen when any of its names matches ``include``, and left out when
    any matches ``exclude``.

    >>> import torch.nn as nn
    >>> [t.name for t in find_targets(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
    ['0.weight', '2.weight']
    """
    check_model(model)
    inc = _check_names("include", include)
    exc = _check_names("exclude", exclude) or []
    params = all_parameters(model)
    names = by_alias(params)
    computed = computed_weights(model)
    for arg, patterns in (("include", inc or []), ("exclude", exc)):
        known = list(names) + (list(computed) if arg == "exclude" else [])
        for pattern in patterns:  # a typo would otherwise silently prune (or protect) nothing
            if not any(_matches(n, [pattern]) for n in known):
                raise ValueError(
                    f"{arg} pattern {pattern!r} matches no parameter of the model (use parameter names "
                    f"such as 'fc.weight' or patterns such as 'fc.*'); parameters are e.g. {list(params)[:5]}"
                    + computed_weight_hint(model, [pattern])
                )
    if inc is None:
        chosen = [t for t in params.values()
                  if any(isinstance(u.module, PRUNABLE_TYPES) and u.attr == "weight" for u in t.uses)]
        skipped = [n for n in computed if not _matches(n, exc)]
        if skipped:  # a mask acts on a parameter; these weights are recomputed at every forward
            warnings.warn(
                f"not pruning {_describe_computed(computed, skipped)}: a weight computed from other "
                f"parameters cannot be masked; to prune it, {_UNPARAMETRIZE}; to silence this, exclude= it",
                UserWarning, stacklevel=2)
    else:
        chosen = [t for t in params.values() if _target_matches(t, inc)]
    chosen = [t for t in chosen if not _target_matches(t, exc)]
    if not chosen:
        raise ValueError(
            "model has nothing to prune: no Linear or Conv weight "
            "(after include/exclude); pass include=[parameter names] to choose parameters"
            + computed_weight_hint(model, computed)
        )
    return chosen

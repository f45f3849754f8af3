"""Which parameters a pruning call acts on.

By default prunekit prunes the ``weight`` of every :class:`torch.nn.Linear` and
convolution layer, the same set ``torch.nn.utils.prune`` users usually pass by hand.
Callers narrow or widen it with ``include=`` / ``exclude=``: lists of parameter
names (``"features.0.weight"``) or ``fnmatch`` patterns (``"features.*"``).

A parameter that ``torch.nn.utils.prune`` has already reparametrised
(``weight_orig`` + ``weight_mask``) keeps its logical name (``"features.0.weight"``),
and its *effective* tensor (``orig * mask``) is what criteria see.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Iterable, Sequence

import torch
from torch import nn

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def effective(module: nn.Module, attr: str) -> torch.Tensor | None:
    """``module.<attr>`` as the forward sees it: ``<attr>_orig * <attr>_mask`` when masked."""
    if hasattr(module, attr + "_mask") and hasattr(module, attr + "_orig"):
        return getattr(module, attr + "_orig") * getattr(module, attr + "_mask")
    return getattr(module, attr, None)


@dataclass(frozen=True)
class Target:
    """One prunable parameter: its logical name, owning module and attribute."""

    name: str
    module: nn.Module
    attr: str

    @property
    def is_masked(self) -> bool:
        return hasattr(self.module, self.attr + "_mask")

    @property
    def tensor(self) -> torch.Tensor:
        """The effective weight (already multiplied by an existing mask)."""
        return effective(self.module, self.attr)

    @property
    def parameter(self) -> nn.Parameter:
        """The trainable parameter (``weight_orig`` when masked)."""
        return getattr(self.module, self.attr + "_orig" if self.is_masked else self.attr)

    @property
    def shape(self) -> torch.Size:
        return self.parameter.shape

    @property
    def mask(self) -> torch.Tensor | None:
        """The current mask as a bool tensor, or ``None`` if not masked."""
        if not self.is_masked:
            return None
        return getattr(self.module, self.attr + "_mask").bool()


def _check_names(arg: str, value: Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{arg} must be a parameter name, a pattern or a list of them, got {type(value).__name__}") from None
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{arg} must contain strings (parameter names or fnmatch patterns), got {n!r}")
    return names


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def all_parameters(model: nn.Module) -> dict[str, Target]:
    """Every parameter of ``model`` by logical name (``weight`` for ``weight_orig``)."""
    out: dict[str, Target] = {}
    for mod_name, module in model.named_modules():
        for attr, _ in module.named_parameters(recurse=False):
            logical = attr[: -len("_orig")] if attr.endswith("_orig") and hasattr(module, attr[:-5] + "_mask") else attr
            full = f"{mod_name}.{logical}" if mod_name else logical
            out.setdefault(full, Target(full, module, logical))
    return out


def find_targets(
    model: nn.Module,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
) -> list[Target]:
    """Prunable parameters of ``model`` in ``named_parameters`` order.

    Without ``include``, the weights of Linear and Conv layers. A pattern in ``include``
    or ``exclude`` that matches no parameter is an error (a typo would otherwise prune
    nothing, or protect nothing).

    >>> import torch.nn as nn
    >>> [t.name for t in find_targets(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))]
    ['0.weight', '2.weight']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inc = _check_names("include", include)
    exc = _check_names("exclude", exclude) or []
    params = all_parameters(model)
    for arg, patterns in (("include", inc or []), ("exclude", exc)):
        for pattern in patterns:  # a typo would otherwise silently prune (or protect) nothing
            if not any(_matches(n, [pattern]) for n in params):
                raise ValueError(
                    f"{arg} pattern {pattern!r} matches no parameter of the model (use parameter names "
                    f"such as 'fc.weight' or patterns such as 'fc.*'); parameters are e.g. {list(params)[:5]}"
                )
    if inc is None:
        chosen = [t for t in params.values() if isinstance(t.module, PRUNABLE_TYPES) and t.attr == "weight"]
    else:
        chosen = [t for n, t in params.items() if _matches(n, inc)]
    chosen = [t for t in chosen if not _matches(t.name, exc)]
    if not chosen:
        raise ValueError(
            "model has nothing to prune: no Linear or Conv weight "
            "(after include/exclude); pass include=[parameter names] to choose parameters"
        )
    return chosen

"""Re-export shims for module paths that moved in 0.2 (kept for one release).

Each old module file (``prunekit/surgery.py``, ...) calls :func:`forward`, which warns once
with a :class:`DeprecationWarning` naming the new path and then forwards every attribute to
the new module, so ``from prunekit.surgery import compact`` and ``pk.surgery.compact`` keep
working.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Callable

#: old module path (relative to ``prunekit``) -> new module path
DEPRECATED_MODULES: dict[str, str] = {
    "attention": "structured.heads",
    "groups": "structured.groups",
    "guards": "core.guards",
    "layers": "structured.layers",
    "pruning": "pipeline",
    "sparse_formats": "sparse.formats",
    "surgery": "structured.compact",
    "methods.amc": "methods.learned.amc",
    "methods.gnn": "methods.learned.gnn",
    "methods.mask_learning": "methods.learned.mask_learning",
    "methods.metapruning": "methods.learned.metapruning",
    "methods.regularization": "methods.learned.regularization",
    "methods.search_space": "methods.learned.search_space",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"prunekit.{old} has moved to prunekit.{new}; the old path is kept for one release "
                  "and will then be removed", DeprecationWarning, stacklevel=4)


def forward(old_module: str) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the shim module ``old_module`` (its ``__name__``)."""
    old = old_module.removeprefix("prunekit.")
    new = DEPRECATED_MODULES[old]
    _warn(old, new)
    target: ModuleType = importlib.import_module(f"prunekit.{new}")

    def __getattr__(name: str) -> object:
        return getattr(target, name)

    def __dir__() -> list[str]:
        return dir(target)

    return __getattr__, __dir__


def deprecated_attribute(old: str) -> ModuleType:
    """``pk.<old>`` for a moved top-level module: import the shim (which warns)."""
    return importlib.import_module(f"prunekit.{old}")

"""Imports only go down the layers of DESIGN.md ("prunekit: layout").

    core (+ _validate, blocks)  <-  the axes (criteria, granularity, allocation, schedules,
    sparse, metrics, train)  <-  pipeline  <-  methods, structured  <-  llm, fusion, experiments

``data``, ``models``, ``zoo``, ``viz`` and ``widgets`` exist for the book: they may use the
library, but no library module may import them, so prunekit works on any model and the book's
toy models can change without touching the library. Modules of one layer may import each other
but not in a cycle. The deprecated re-export shims (old module paths) are not part of any layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit"
BOOK_SUPPORT = {"data", "models", "zoo", "viz", "widgets", "experiments"}  # DESIGN.md: book support
LAYERS = {
    "_validate": 0, "core": 0, "blocks": 0,
    "criteria": 1, "granularity": 1, "allocation": 1, "schedules": 1, "sparse": 1, "metrics": 1, "train": 1,
    "pipeline": 2,
    "methods": 3, "structured": 3,
    "llm": 4, "fusion": 4, "experiments": 4,
}
SHIMS = {"_shim.py", "attention.py", "groups.py", "guards.py", "layers.py", "pruning.py", "sparse_formats.py",
         "surgery.py", "masks.py", "targets.py"}
# Known back-edges, each to be removed (issue "The house before the new wings"); the test fails
# when one disappears, so that this list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def unit(rel: str) -> str:
    """The layer unit of a module path relative to prunekit (``criteria/norm.py`` -> criteria)."""
    return rel.split("/")[0].removesuffix(".py")


def is_shim(rel: str) -> bool:
    if "/" not in rel:
        return rel in SHIMS
    return rel.startswith("methods/") and rel.count("/") == 1 and rel != "methods/__init__.py"


def imported_units(path: Path) -> set[str]:
    """Top-level prunekit units imported by ``path`` (relative or absolute, at any depth)."""
    rel_parts = path.relative_to(PACKAGE).parts
    package = list(rel_parts[:-1])                       # the package the module lives in
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                full = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "prunekit":
                full = node.module.split(".")[1:]
            else:
                continue
            if full:
                found.add(full[0])
            else:                                        # from prunekit import a, b / from .. import a
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "prunekit" and len(parts) > 1:
                    found.add(parts[1])
    return {u.removesuffix(".py") for u in found}


MODULES = sorted(p for p in PACKAGE.rglob("*.py")
                 if p.relative_to(PACKAGE).as_posix() != "__init__.py" and not is_shim(p.relative_to(PACKAGE).as_posix()))
IDS = [p.relative_to(PACKAGE).as_posix() for p in MODULES]


def edges() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for path, rel in zip(MODULES, IDS):
        for target in imported_units(path) - {unit(rel)}:
            if (rel, target) not in KNOWN:
                out.setdefault((unit(rel), target), []).append(rel)
    return out


def test_every_module_has_a_layer():
    units = {unit(rel) for rel in IDS}
    assert units <= set(LAYERS) | BOOK_SUPPORT, sorted(units - set(LAYERS) - BOOK_SUPPORT)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_imports_only_go_down(path):
    rel = path.relative_to(PACKAGE).as_posix()
    me = unit(rel)
    bad = []
    for target in imported_units(path) - {me}:
        if (rel, target) in KNOWN:
            continue
        if me in BOOK_SUPPORT:
            continue                                     # the book's support may use anything
        if target in BOOK_SUPPORT:
            bad.append(f"{target} (the book's support)")
        elif target in LAYERS and LAYERS[target] > LAYERS[me]:
            bad.append(f"{target} (layer {LAYERS[target]} above {me}'s {LAYERS[me]})")
    assert not bad, f"{rel} imports {bad}"


def test_known_exceptions_still_exist():
    """Each known back-edge is still there (remove it from KNOWN once fixed)."""
    for rel, target in KNOWN:
        assert target in imported_units(PACKAGE / rel), (rel, target)


def test_no_cycles_between_units():
    graph: dict[str, set[str]] = {}
    for (a, b) in edges():
        if (a in LAYERS) and (b in LAYERS):
            graph.setdefault(a, set()).add(b)
    seen: dict[str, int] = {}

    def visit(n, stack):
        seen[n] = 1
        for m in graph.get(n, ()):
            assert seen.get(m) != 1, f"import cycle: {' -> '.join(stack + [n, m])}"
            if m not in seen:
                visit(m, stack + [n])
        seen[n] = 2

    for n in list(graph):
        if n not in seen:
            visit(n, [])


def test_the_check_sees_imports():
    """The import finder is not vacuous: relative, package-relative and absolute forms."""
    assert "blocks" in imported_units(PACKAGE / "models.py")
    assert "core" in imported_units(PACKAGE / "criteria" / "magnitude.py")
    assert "models" in imported_units(PACKAGE / "zoo.py")


def test_shims_forward_and_warn():
    import importlib
    import sys
    import warnings

    import prunekit as pk
    from prunekit._shim import DEPRECATED_MODULES
    for old, new in DEPRECATED_MODULES.items():
        sys.modules.pop(f"prunekit.{old}", None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shim = importlib.import_module(f"prunekit.{old}")
        assert any(issubclass(w.category, DeprecationWarning) and f"prunekit.{new}" in str(w.message)
                   for w in caught), old
        real = importlib.import_module(f"prunekit.{new}")
        public = [n for n in dir(real) if not n.startswith("_")]
        assert public and all(getattr(shim, n) is getattr(real, n) for n in public), old
    with pytest.warns(DeprecationWarning, match="structured.compact"):
        sys.modules.pop("prunekit.surgery", None)
        vars(pk).pop("surgery", None)
        assert pk.surgery.compact is pk.compact

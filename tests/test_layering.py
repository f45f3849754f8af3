"""The library never imports the book's support modules (DESIGN.md, "prunekit: layout").

``data``, ``models``, ``zoo``, ``viz`` and ``widgets`` exist for the book: they may use the
library, but no library module may import them, so that prunekit works on any model and the
book's toy models can change without touching the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit"
BOOK_SUPPORT = {"data", "models", "zoo", "viz", "widgets"}
# Known exception, to be removed with the package layout (issue "The house before the new
# wings"): MetaPruning's PruningNet generates the layers of the book's SmallCNN.
KNOWN = {("methods/metapruning.py", "models")}


def _imported_prunekit_modules(path: Path) -> set[str]:
    """First-level prunekit modules imported by ``path`` (relative or absolute imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(PACKAGE).parts) - 1   # 0 for prunekit/x.py
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:                                  # from .x import / from .. import x
                parts = list(path.relative_to(PACKAGE).parts[:-1])[: max(0, depth - node.level + 1)]
                base = parts + (node.module.split(".") if node.module else [])
                names = [base[0]] if base else [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "prunekit":
                rest = node.module.split(".")[1:]
                names = rest[:1] or [a.name for a in node.names]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "prunekit" and len(parts) > 1:
                    found.add(parts[1])
    return found


LIBRARY = sorted(p for p in PACKAGE.rglob("*.py")
                 if p.stem not in BOOK_SUPPORT and p.relative_to(PACKAGE).as_posix() != "__init__.py")


@pytest.mark.parametrize("path", LIBRARY, ids=[p.relative_to(PACKAGE).as_posix() for p in LIBRARY])
def test_library_does_not_import_book_support(path):
    rel = path.relative_to(PACKAGE).as_posix()
    bad = {m for m in _imported_prunekit_modules(path) & BOOK_SUPPORT if (rel, m) not in KNOWN}
    assert not bad, f"{rel} imports the book's {sorted(bad)}"


def test_the_check_sees_imports():
    """The import finder is not vacuous: it sees models.py's import of blocks, and
    metapruning's (known) import of models."""
    assert "blocks" in _imported_prunekit_modules(PACKAGE / "models.py")
    assert "models" in _imported_prunekit_modules(PACKAGE / "methods" / "metapruning.py")
    assert "targets" in _imported_prunekit_modules(PACKAGE / "criteria" / "__init__.py")

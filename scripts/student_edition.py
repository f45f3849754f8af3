"""Write a student edition of the chapter notebooks: no solutions, no hidden checks.

    .venv/bin/python scripts/student_edition.py [OUT_DIR]     # default: _build/student

For each notebook in book/: every ``{solution}`` block is removed from the Markdown cells,
and every cell tagged ``remove-cell`` (the checks behind the chapter's claims and behind
the exercise solutions, and the set-up cell) is dropped, except the set-up cell, which
students need outside a clone of the repository. Outputs are kept, so the notebooks read
as on the site. Exercises keep their text, level and time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from set_repository import MARKER  # noqa: E402

# a {solution} directive fenced with 3 or more backticks (or colons), up to its closing fence
SOLUTION = re.compile(r"^(?P<fence>`{3,}|:{3,})\{solution\}.*?^(?P=fence)[ \t]*$\n?", re.M | re.S)


def strip_solutions(text: str) -> str:
    return SOLUTION.sub("", text)


def student_notebook(nb):
    cells = []
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if "remove-cell" in tags and not cell.source.startswith(MARKER):
            continue
        if cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source)
        cells.append(cell)
    nb.cells = cells
    return nb


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "_build" / "student"
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = student_notebook(nbformat.read(path, as_version=4))
        nbformat.write(nb, out / path.name)
        print(f"wrote {out / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Write the book's repository address (``repository.url`` in ``_config.yml``) into the
set-up cell of every chapter notebook.

    .venv/bin/python scripts/set_repository.py          # rewrite the cells
    .venv/bin/python scripts/set_repository.py --check  # exit 1 if a cell is out of step

``_config.yml`` is the one place the address is set: the site's repository, Binder and
Colab buttons come from it (book/_ext/pruning_book.py), and so does the set-up cell, which
installs prunekit from that repository when a notebook runs where prunekit is missing
(Colab, Binder, a downloaded notebook). The cell is tagged ``remove-cell``: the site does
not show it. It is inserted after the title cell when a notebook has none.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = "# Set-up for Colab, Binder or a downloaded copy of this notebook"
URL = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/?$")


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """The repository address set in ``_config.yml`` ("" while unset)."""
    url = ((yaml.safe_load(config.read_text()) or {}).get("repository") or {}).get("url") or ""
    url = url.strip()
    if url and not URL.match(url):
        raise ValueError(f"repository.url in _config.yml must be https://github.com/<owner>/<repo> "
                         f"(Binder and Colab need a GitHub address) or empty; got {url!r}")
    return url.rstrip("/")


def setup_source(url: str) -> str:
    """The source of the set-up cell for repository ``url``."""
    return f'''{MARKER}:
# install prunekit when it is missing. In a clone of the repository, `pip install -e .`
# (or `make venv`) does the same.
import importlib.util
import subprocess
import sys

REPOSITORY = "{url}"  # from _config.yml, written by scripts/set_repository.py
if importlib.util.find_spec("prunekit") is None:
    if not REPOSITORY:
        raise ModuleNotFoundError("prunekit is not installed: run `pip install -e .` "
                                  "in a clone of the book's repository")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet",
                           f"prunekit @ git+{{REPOSITORY}}"])'''


def setup_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.source.startswith(MARKER)]


def notebooks() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    url = repository_url()
    stale = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        found = setup_cells(nb)
        want = setup_source(url)
        if len(found) == 1 and nb.cells[found[0]].source == want \
                and "remove-cell" in nb.cells[found[0]].metadata.get("tags", []):
            continue
        stale.append(path.relative_to(ROOT))
        if check:
            continue
        for i in reversed(found):
            del nb.cells[i]
        cell = nbformat.v4.new_code_cell(want, metadata={"tags": ["remove-cell"]})
        cell.pop("id", None)
        cell["id"] = "setup-prunekit"
        nb.cells.insert(1, cell)
        nbformat.write(nb, path)
    if check and stale:
        print("set-up cells out of step with repository.url: " + ", ".join(map(str, stale))
              + "\nrun: python scripts/set_repository.py")
        return 1
    for p in stale:
        print(f"updated {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

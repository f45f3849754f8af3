"""Re-execute book notebooks in place, so that their stored outputs are current.

    .venv/bin/python scripts/execute_notebooks.py                 # every notebook in book/
    .venv/bin/python scripts/execute_notebooks.py book/01_introduction.ipynb

Each notebook runs in its own directory with the ``python3`` kernel and the inline
matplotlib backend. To keep stored notebooks small and free of churn:

* no ipywidgets state is stored in the notebook metadata (the site would otherwise embed it
  in every page; ``prunekit.widgets.slider`` carries its own static ``text/html`` frames);
* no per-cell execution timestamps are recorded;
* tqdm progress bars (ipywidgets views whose text fallback is the bar's *first* state,
  "0%|...") are dropped: readers see them live when they run a cell, and the site would
  otherwise show a bar frozen at 0%.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"
TQDM_BAR = re.compile(r"\d+%\|.*\| *\d+/\S+ \[")


def is_progress_bar(output) -> bool:
    data = output.get("data", {})
    return WIDGET in data and bool(TQDM_BAR.search("".join(data.get("text/plain", ""))))


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ.pop("MPLBACKEND", None)  # stored outputs need the inline backend
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=False,
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not is_progress_bar(o)]
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "book").glob("*.ipynb"))
    for path in paths:
        seconds = execute(path.resolve())
        # the kernel is a child process: its peak resident memory (Linux reports KiB)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{path}: executed in {seconds:.1f} s, peak kernel RSS so far {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

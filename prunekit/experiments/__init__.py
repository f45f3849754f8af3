"""Reproducible experiments behind the book's chapters, seeded and cached as JSON that ships with
the package (``python -m prunekit.experiments.when``, ``.fusion``, ``.llm``).

Each experiment module defines ``CONFIG``, a tiny ``QUICK`` config, ``RESULTS`` (its JSON path)
and ``run(cfg, progress)``; :func:`cli` and :func:`load_results` are their shared command line
and loader.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

__all__ = ["cli", "load_results"]


def load_results(path: Path | str) -> dict[str, Any]:
    """The cached results at ``path``."""
    return json.loads(Path(path).read_text())


def cli(module: str, description: str, run: Callable[..., dict[str, Any]], config: dict[str, Any],
        quick: dict[str, Any], results: Path, argv: list[str] | None = None) -> int:
    """``python -m prunekit.experiments.<module> [--quick] [--out PATH] [--no-progress]``: run the
    experiments and write their JSON (``--quick``: a tiny smoke-test config, printed)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--quick", action="store_true", help="a tiny smoke-test config")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write the JSON (default: {results}; --quick: stdout)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out_results = run(quick if args.quick else config, progress=not args.no_progress)
    text = json.dumps(out_results, indent=1)
    out = args.out if args.out is not None else (None if args.quick else results)
    if out is None:
        print(text)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        print(f"wrote {out} ({out_results['seconds']} s)")
    return 0

"""``python -m prunekit.experiments list | run NAME... | show NAME...`` (see :mod:`.runner`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prunekit.experiments",
        description="Named, seeded experiments cached by the hash of their configuration "
                    "(the book's eight contrast settings). The chapters' own experiment sets run "
                    "with python -m prunekit.experiments.when (or .fusion, .llm).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered experiments")
    for command, text in (("run", "run (or find in the cache) and print the tables"),
                          ("show", "print the tables from the cache only")):
        p = sub.add_parser(command, help=text)
        p.add_argument("names", nargs="+", help="experiment names, or 'all'")
        p.add_argument("--seeds", type=int, nargs="+", default=None)
        p.add_argument("--quick", action="store_true", help="the tiny smoke-test configuration")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help=f"where to read and write trials (default {runner.default_cache_dir()}); "
                            f"{runner.SHIPPED_DIR} refreshes the results that ship with prunekit")
        if command == "run":
            p.add_argument("--force", action="store_true", help="recompute cached trials")
            p.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in runner.available():
            print(f"{name:28s} {runner.get(name).title}")
        return 0
    names = runner.available() if args.names == ["all"] else args.names
    try:
        experiments = [runner.get(n) for n in names]
    except ValueError as err:
        parser.error(str(err))
    status = 0
    for exp in experiments:
        if args.command == "show":
            result = runner.run(exp, seeds=args.seeds, quick=args.quick, cache_dir=args.cache_dir,
                                progress=False, compute=False)
        else:
            result = runner.run(exp, seeds=args.seeds, quick=args.quick, cache_dir=args.cache_dir,
                                force=args.force, progress=not args.no_progress)
        print(f"\n## {exp.name}: {exp.title}\n")
        if not result.trials:
            print("(nothing cached; use run)")
            status = 1
            continue
        print(result.table())
        print(f"\n{result.hits} cached, {result.misses} computed trials "
              f"(seeds {result.seeds})")
    return status


if __name__ == "__main__":
    sys.exit(main())

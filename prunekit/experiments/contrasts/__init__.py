"""The survey's eight contrast settings as named, cached, seeded experiments (see
:mod:`prunekit.experiments.runner`); importing this package registers them.

Each module runs one pair on the zoo's small networks and reports, per seed, rows keyed by
``setting`` and ``sparsity`` (at least the sparsities of :data:`GRID`), with an ``accuracy``
metric, and defines ``EXPERIMENT`` (the registered experiment), ``SIDES`` (the pair's two
sides, e.g. ``("one-shot", "iterative")``) and ``SIDE_OF`` (each setting's side).
"""

from __future__ import annotations

from ._common import GRID
from . import granularity, allocation  # noqa: I001  (the survey's order: pairs 1 and 8)

# the pairs in the survey's order (each import registers its experiment)
_MODULES: tuple = (granularity, allocation)

__all__ = ["GRID", "PAIRS"]

#: ``(experiment name, (side A, side B), {setting: side})`` per pair, in the survey's order.
PAIRS: list[tuple[str, tuple[str, str], dict[str, str]]] = [
    (m.EXPERIMENT.name, m.SIDES, m.SIDE_OF) for m in _MODULES]

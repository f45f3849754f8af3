"""The survey's eight contrast settings as named, cached, seeded experiments (see
:mod:`prunekit.experiments.runner`); importing this package registers them.

Each module runs one pair on the zoo's small networks and reports, per seed, rows keyed by
``setting`` and ``sparsity`` (at least the sparsities of :data:`GRID`), with an ``accuracy``
metric, and defines ``EXPERIMENT`` (the registered experiment), ``SIDES`` (the pair's two
sides, e.g. ``("one-shot", "iterative")``) and ``SIDE_OF`` (each setting's side; a setting
it leaves out is a reference outside the comparison, such as the dense network).
:mod:`.common` holds what they share: the pretrained network of each seed, the data,
fine-tuning and evaluation.
"""

from __future__ import annotations

# in the survey's order: each import registers its pair, so `list` shows them in this order
from . import granularity, schedule, criteria, weights  # noqa: I001
from . import scratch, transfer, dynamic, allocation  # noqa: I001
from .common import GRID

__all__ = ["GRID", "PAIRS"]

_MODULES = (granularity, schedule, criteria, weights, scratch, transfer, dynamic, allocation)

#: ``(experiment name, (side A, side B), {setting: side})`` per pair, in the survey's order.
PAIRS: list[tuple[str, tuple[str, str], dict[str, str]]] = [
    (m.EXPERIMENT.name, m.SIDES, m.SIDE_OF) for m in _MODULES]

"""Pruning before training (PBT): at initialisation, from a criterion computed on the untrained network.

* :mod:`.synflow` -- :func:`prune_synflow`, iterative SynFlow (Tanaka et al. 2020);
* :mod:`.force` -- :func:`prune_force`, FORCE / Iterative SNIP (de Jorge et al. 2021);
* :mod:`.random` -- :func:`prune_random`, random pruning with ER/ERK layer densities (Liu et al. 2022).
"""

from .force import prune_force
from .random import prune_random
from .synflow import prune_synflow

__all__ = ["prune_force", "prune_random", "prune_synflow"]

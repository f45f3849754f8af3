"""Pruning before training (PBT): at initialisation, from a criterion computed on the untrained network.

* :mod:`.synflow` -- :func:`prune_synflow`, iterative SynFlow (Tanaka et al. 2020).
"""

from .synflow import prune_synflow

__all__ = ["prune_synflow"]

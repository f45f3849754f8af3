"""Pruning before training (PBT): at initialisation, from a criterion computed on the untrained network."""

from .random import prune_random

__all__ = ["prune_random"]

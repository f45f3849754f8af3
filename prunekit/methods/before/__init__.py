"""Pruning before training (PBT): at initialisation, from a criterion computed on the untrained network."""

"""Pruning after training (PAT): prune a trained network, then fine-tune or re-fit.

* :mod:`.reconstruction` -- ThiNet, LASSO channel pruning and layer-wise OBS, which prune one
  layer and re-fit the weights that stay.
"""

from .reconstruction import lasso_channel_prune, obs_prune, obs_prune_layer, thinet_prune

__all__ = ["thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer"]

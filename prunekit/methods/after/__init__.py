"""Pruning after training (PAT): prune a trained network, then fine-tune or re-fit.

* :mod:`.imp` -- iterative magnitude pruning, lottery tickets and weight / learning-rate
  rewinding (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al. 2020);
* :mod:`.early_bird` -- early-bird tickets: the epoch where the channel mask stops changing
  (You et al. 2020);
* :mod:`.reconstruction` -- ThiNet, LASSO channel pruning and layer-wise OBS, which prune one
  layer and re-fit the weights that stay.
"""

from .early_bird import EarlyBird, bn_channel_mask, early_bird_epoch, mask_distance
from .imp import imp
from .reconstruction import lasso_channel_prune, obs_prune, obs_prune_layer, thinet_prune

__all__ = ["imp", "EarlyBird", "bn_channel_mask", "early_bird_epoch", "mask_distance",
           "thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer"]

"""Pruning methods on the "learning" axis: the mask is learned rather than scored.

* :mod:`.regularization` -- sparsity regularisation: L1, group lasso (SSL), Network Slimming;
* :mod:`.mask_learning` -- learned channel masks: hard-concrete L0 gates, straight-through masks.
"""

from .mask_learning import HC_BETA, HC_GAMMA, HC_ZETA, HardConcreteGates, STEChannelMasks, train_l0_gates, train_ste_masks
from .regularization import (bn_gammas, bn_l1_penalty, channel_masks, group_lasso_penalty, l1_penalty,
                             network_slimming)

__all__ = [
    "l1_penalty", "group_lasso_penalty", "bn_l1_penalty", "bn_gammas", "network_slimming", "channel_masks",
    "HardConcreteGates", "train_l0_gates", "STEChannelMasks", "train_ste_masks", "HC_BETA", "HC_GAMMA", "HC_ZETA",
]

"""Pruning methods on the "learning" axis: the mask is learned rather than scored.

See :mod:`prunekit.methods.learned`.
"""

from .learned import (
    HC_BETA, HC_GAMMA, HC_ZETA, HardConcreteGates, STEChannelMasks, bn_gammas, bn_l1_penalty, channel_masks,
    group_lasso_penalty, l1_penalty, network_slimming, train_l0_gates, train_ste_masks,
)

__all__ = [
    "l1_penalty", "group_lasso_penalty", "bn_l1_penalty", "bn_gammas", "network_slimming", "channel_masks",
    "HardConcreteGates", "train_l0_gates", "STEChannelMasks", "train_ste_masks", "HC_BETA", "HC_GAMMA", "HC_ZETA",
]

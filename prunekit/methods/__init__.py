"""Pruning methods on the "learning" axis: the mask is learned rather than scored.

* :mod:`.regularization` -- sparsity regularisation: L1, group lasso (SSL), Network Slimming;
* :mod:`.mask_learning` -- learned channel masks: hard-concrete L0 gates, straight-through masks;
* :mod:`.search_space` -- per-layer channel ratios of a model, their exact MACs and reward;
* :mod:`.amc` -- reinforcement learning of the ratios, AMC-style (REINFORCE agent);
* :mod:`.metapruning` -- a PruningNet that generates weights for any widths + evolutionary search;
* :mod:`.gnn` -- a graph neural network over the layer graph that predicts the ratios (AGMC-style).
"""

from .mask_learning import HC_HIGH, HC_LOW, HC_TEMPERATURE, HardConcreteGates, STEChannelMasks, train_l0_gates, train_ste_masks
from .amc import AMCPolicy, amc_search
from .gnn import GNNPolicy, LayerGNN, gnn_ratios, gnn_search
from .metapruning import PruningNet, evolutionary_search, metapruning_search, train_pruningnet
from .regularization import (bn_gammas, bn_l1_penalty, channel_masks, group_lasso_penalty, l1_penalty,
                             network_slimming)
from .search_space import SearchResult, SearchSpace, apply_ratios, as_batch

__all__ = [
    "l1_penalty", "group_lasso_penalty", "bn_l1_penalty", "bn_gammas", "network_slimming", "channel_masks",
    "HardConcreteGates", "train_l0_gates", "STEChannelMasks", "train_ste_masks", "HC_TEMPERATURE", "HC_LOW", "HC_HIGH",
    "SearchSpace", "SearchResult", "apply_ratios", "as_batch", "amc_search", "AMCPolicy",
    "PruningNet", "train_pruningnet", "evolutionary_search", "metapruning_search",
    "LayerGNN", "GNNPolicy", "gnn_search", "gnn_ratios",
]

"""Pruning methods: compositions of the axes, filed by *when* they act.

* :mod:`.before` -- before training (PBT); :mod:`.during` -- during training (PDT);
* :mod:`.after` -- after training (PAT); :mod:`.runtime` -- input-dependent (dynamic) pruning;
* :mod:`.learned` -- the mask or the per-layer ratios are learned: sparsity regularisation
  (L1, group lasso, Network Slimming), L0 / straight-through masks, AMC, MetaPruning, GNN.
"""

from . import after, before, during, learned, runtime
from .after import (EarlyBird, bn_channel_mask, early_bird_epoch, imp, lasso_channel_prune, mask_distance, obs_prune,
                    obs_prune_layer, thinet_prune)
from .before import prune_force, prune_random, prune_synflow
from .during import DynamicSparsity, GradualPruner, SoftFilterPruning, new_connections, rigl_update, set_update
from .runtime import ChannelGate, evit, evit_macs, executed_macs, gate_model
from .learned.mask_learning import HC_HIGH, HC_LOW, HC_TEMPERATURE, HardConcreteGates, STEChannelMasks, train_l0_gates, train_ste_masks
from .learned.amc import AMCPolicy, amc_search, reinforce
from .learned.gnn import GNNPolicy, LayerGNN, gnn_ratios, gnn_search
from .learned.metapruning import PruningNet, evolutionary_search, metapruning_search, train_pruningnet
from .learned.regularization import (bn_gammas, bn_l1_penalty, channel_masks, group_lasso_penalty, l1_penalty,
                             network_slimming)
from .learned.search_space import SearchResult, SearchSpace, apply_ratios, as_batch

__all__ = [
    "after", "before", "during", "learned", "runtime",
    "prune_synflow", "prune_random", "prune_force", "imp", "EarlyBird", "early_bird_epoch", "mask_distance",
    "bn_channel_mask", "GradualPruner", "DynamicSparsity", "rigl_update", "set_update",
    "new_connections", "SoftFilterPruning", "ChannelGate", "gate_model", "executed_macs", "evit", "evit_macs",
    "thinet_prune", "lasso_channel_prune", "obs_prune", "obs_prune_layer",
    "l1_penalty", "group_lasso_penalty", "bn_l1_penalty", "bn_gammas", "network_slimming", "channel_masks",
    "HardConcreteGates", "train_l0_gates", "STEChannelMasks", "train_ste_masks", "HC_TEMPERATURE", "HC_LOW", "HC_HIGH",
    "SearchSpace", "SearchResult", "apply_ratios", "as_batch", "amc_search", "AMCPolicy", "reinforce",
    "PruningNet", "train_pruningnet", "evolutionary_search", "metapruning_search",
    "LayerGNN", "GNNPolicy", "gnn_search", "gnn_ratios",
]


def __getattr__(name: str):
    """``pk.methods.amc`` and the other moved modules still resolve, with a warning."""
    from .._shim import DEPRECATED_MODULES, deprecated_attribute
    if f"methods.{name}" in DEPRECATED_MODULES:
        return deprecated_attribute(f"methods.{name}")
    raise AttributeError(f"module 'prunekit.methods' has no attribute {name!r}")

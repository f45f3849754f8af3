"""prunekit: the companion library of the book *Pruning, hands-on*.

A pruning method is a choice on a few independent axes (criterion, granularity,
allocation, schedule, ...), following the taxonomy of Cheng, Zhang & Shi, "A Survey on
Deep Neural Network Pruning" (IEEE TPAMI 2024, arXiv 2308.06767).

>>> import torch.nn as nn, prunekit as pk
>>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
>>> masks = pk.prune(model, sparsity=0.5)          # magnitude, unstructured, global
>>> round(pk.masks.sparsity_of(masks), 2)
0.5
"""

from . import (allocation, attention, blocks, criteria, data, granularity, groups, layers, masks, methods, metrics, models,
               sparse_formats, surgery, targets, train, viz, widgets, zoo)
from .criteria import score
from .attention import compact_heads
from .groups import prune_groups
from .layers import drop_layers
from .masks import apply_masks, get_masks, remove_masks
from .metrics import count_macs, count_nonzeros, count_params, latency, layer_sparsity, summary
from .pruning import make_masks, prune
from .surgery import compact, zero_removed_channels

__version__ = "0.1.0"

__all__ = [
    "allocation", "attention", "blocks", "criteria", "data", "granularity", "groups", "layers", "masks", "methods", "metrics",
    "models", "sparse_formats", "surgery", "targets", "train", "viz", "widgets", "zoo",
    "score", "make_masks", "apply_masks", "remove_masks", "get_masks", "prune", "prune_groups",
    "compact", "compact_heads", "drop_layers", "zero_removed_channels", "summary", "latency", "count_params",
    "count_nonzeros", "count_macs", "layer_sparsity",
]

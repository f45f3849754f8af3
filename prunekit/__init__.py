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

from . import (allocation, blocks, core, criteria, data, fusion, granularity, llm, methods, metrics, models, pipeline,
               schedules, sparse, structured, train, viz, widgets, zoo)
from .core import masks, targets
import sys as _sys

# ``prunekit.masks`` and ``prunekit.targets`` stay importable under their short names.
_sys.modules.setdefault(__name__ + ".masks", masks)
_sys.modules.setdefault(__name__ + ".targets", targets)
from .criteria import score
from .core.masks import apply_masks, get_masks, remove_masks
from .metrics import count_macs, count_nonzeros, count_params, latency, layer_sparsity, summary
from .pipeline import make_masks, prune
from .structured.groups import prune_groups
from .structured.heads import compact_heads
from .structured.layers import drop_layers
from .structured.compact import compact, zero_removed_channels
from ._shim import DEPRECATED_MODULES, deprecated_attribute

__version__ = "0.2.0"

__all__ = [
    "allocation", "blocks", "core", "criteria", "data", "fusion", "granularity", "llm", "masks", "methods", "metrics", "models",
    "pipeline", "schedules", "sparse", "structured", "targets", "train", "viz", "widgets", "zoo",
    "score", "make_masks", "apply_masks", "remove_masks", "get_masks", "prune", "prune_groups",
    "compact", "compact_heads", "drop_layers", "zero_removed_channels", "summary", "latency", "count_params",
    "count_nonzeros", "count_macs", "layer_sparsity",
]


def __getattr__(name: str):
    """Old module paths (``pk.surgery``, ``pk.attention``, ...) still resolve, with a warning."""
    if name in DEPRECATED_MODULES:
        return deprecated_attribute(name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")

"""Structural pruning with physical removal (universal speedup): coupled channel groups,
compaction into smaller layers (verified against the masked model), attention heads and
whole residual blocks.
"""

from . import groups, heads, layers
from .groups import prune_groups
from .heads import compact_heads
from .layers import drop_layers
from .compact import compact, zero_removed_channels

__all__ = ["groups", "heads", "layers", "prune_groups", "compact_heads", "drop_layers", "compact",
           "zero_removed_channels"]

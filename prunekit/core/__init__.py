"""Plumbing with no taxonomy meaning: which parameters can be pruned (:mod:`.targets`), the
``torch.nn.utils.prune``-compatible reparametrisation (:mod:`.masks`), guards that restore a
model's state (:mod:`.guards`), and the one traced graph of a model with its channel groups
(:mod:`.graph`). Everything else in prunekit builds on these.
"""

from . import graph, guards, masks, targets

__all__ = ["graph", "guards", "masks", "targets"]

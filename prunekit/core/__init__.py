"""Plumbing with no taxonomy meaning: which parameters can be pruned (:mod:`.targets`), the
``torch.nn.utils.prune``-compatible reparametrisation (:mod:`.masks`), and guards that
restore a model's state (:mod:`.guards`). Everything else in prunekit builds on these.
"""

from . import guards, masks, targets

__all__ = ["guards", "masks", "targets"]

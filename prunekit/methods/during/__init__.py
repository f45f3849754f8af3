"""Pruning during training (PDT): masks that change as the weights train.

* :class:`GradualPruner` -- gradual magnitude pruning on the AGP schedule (Zhu & Gupta 2018),
  a training-loop callback;
* :func:`rigl_update`, :func:`set_update` -- the per-layer drop-and-grow updates of dynamic
  sparse training (RigL: Evci et al. 2020; SET: Mocanu et al. 2018), with
  :func:`new_connections` for the grown weights the caller zeroes; :class:`DynamicSparsity`
  runs them during training as a callback (ERK random start, cosine drop fraction);
* :class:`SoftFilterPruning` -- soft filter pruning (He et al. 2018): the weakest filters are
  zeroed every epoch and may recover; ``finalize()`` removes them for good.
"""

from .dynamic import DynamicSparsity, drop_count, new_connections, rigl_update, set_update
from .gmp import GradualPruner
from .sfp import SoftFilterPruning, filter_norms

__all__ = ["SoftFilterPruning", "filter_norms", "GradualPruner", "DynamicSparsity", "rigl_update", "set_update", "new_connections", "drop_count"]

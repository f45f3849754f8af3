"""The schedule axis: how much to prune, and when (Cheng, Zhang & Shi 2024, "when to prune").

* :func:`agp` -- the cubic gradual schedule of Zhu & Gupta (2018), sparsity by training step;
* :func:`iterative` -- cumulative sparsities of ``rounds`` prune -> retrain rounds, each removing
  the same fraction of what remains (iterative magnitude pruning, lottery tickets);
* :func:`cosine_decay` -- RigL's drop fraction for dynamic sparse training (Evci et al. 2020).

One-shot pruning is the trivial schedule (``iterative(s, 1) == [s]``). The schedules are pure
functions of plain numbers; the callbacks that apply them during training live in
:mod:`prunekit.methods.during`.
"""

from .agp import agp
from .cosine import cosine_decay
from .iterative import iterative

__all__ = ["agp", "iterative", "cosine_decay"]

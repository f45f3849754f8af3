"""Data-free baselines: magnitude and random.

* ``"magnitude"`` — |w| (Han et al. 2015, "Learning both weights and connections for
  efficient neural networks"): small weights contribute little to a layer's output.
  Weight-level scores are |w|; ``p`` only matters once scores are aggregated to groups
  (|w|^p orders weights exactly as |w| does), so it is not an argument here.
* ``"random"`` — i.i.d. uniform scores from a seeded generator: the control every
  pruning comparison needs (Blalock et al. 2020). The generator is seeded with a hash of
  ``seed``, not with ``seed`` itself: a model initialised after ``torch.manual_seed(0)``
  drew its initial weights from the same uniform stream that ``Generator().manual_seed(0)``
  yields, so "random" scores seeded with 0 would be correlated with the weights (and with
  magnitude) of every model trained from seed 0.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..core.targets import Target
from .registry import register

__all__ = ["magnitude", "random"]


@register("magnitude", description="|w|: small weights matter least (Han et al. 2015)",
          reference="han2015learning")
def magnitude(model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    return {t.name: t.tensor.detach().abs() for t in targets}


@register("random", description="uniform random scores, seeded (the baseline; Blalock et al. 2020)",
          reference="blalock2020state")
def random(model: nn.Module, targets: list[Target], seed: int = 0) -> dict[str, torch.Tensor]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    digest = hashlib.sha256(f"prunekit.criteria.random:{seed}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return {t.name: torch.rand(t.shape, generator=gen).to(t.parameter.device) for t in targets}

"""Data-free baselines: magnitude and random.

* ``"magnitude"`` — |w| (Han et al. 2015, "Learning both weights and connections for
  efficient neural networks"): small weights contribute little to a layer's output.
  Weight-level scores are |w|; ``p`` only matters once scores are aggregated to groups
  (|w|^p orders weights exactly as |w| does), so it is not an argument here.
* ``"random"`` — i.i.d. uniform scores from a seeded generator: the control every
  pruning comparison needs (Blalock et al. 2020).
"""

from __future__ import annotations

import torch
from torch import nn

from ..targets import Target
from . import register


@register("magnitude", description="|w|: small weights matter least (Han et al. 2015)",
          reference="han2015learning")
def magnitude(model: nn.Module, targets: list[Target]) -> dict[str, torch.Tensor]:
    return {t.name: t.tensor.detach().abs() for t in targets}


@register("random", description="uniform random scores, seeded (the baseline; Blalock et al. 2020)",
          reference="blalock2020state")
def random(model: nn.Module, targets: list[Target], seed: int = 0) -> dict[str, torch.Tensor]:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator().manual_seed(seed)
    return {t.name: torch.rand(t.shape, generator=gen).to(t.parameter.device) for t in targets}

"""``"channel"``: whole output channels (dim 0 of any weight).

Li et al. (2017, *Pruning Filters for Efficient ConvNets*) rank filters by the L1 norm of
their weights (``reduction="l1"`` with magnitude scores); the default L2 norm is the one
``torch.nn.utils.prune.ln_structured(n=2, dim=0)`` uses. In global scope the reduced score
is normalised by the channel size so that layers with a different fan-in compete fairly.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .._validate import MaskRequest
from .base import Granularity, _float, _shape, reduce_units, register


def channel_scores(score: torch.Tensor, reduction: str, normalise: bool = False) -> torch.Tensor:
    """One score per output channel (dim 0) of a weight-level score; 1-D scores as they are."""
    if score.dim() <= 1:
        return _float(score).reshape(-1)
    return reduce_units(score.reshape(score.shape[0], -1), (1,), reduction, normalise)


def channel_mask(keep: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Expand a per-channel keep vector ``[out]`` to a mask of ``shape`` (whole rows)."""
    shape = _shape(shape)
    return keep.reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape).clone()


class Channel(Granularity):
    """Output channels; weight-level scores are reduced per channel, ``[out]`` scores used as they are.
    Every tensor keeps at least one channel."""

    kind = "channel"
    default_reduction = "l2"
    min_keep = 1

    def check_level(self, name, level, got=(), shape=()) -> None:
        return None  # channel-level scores serve channels

    def check_criterion_level(self, criterion, level) -> None:
        return None

    def units(self, scores: Mapping[str, torch.Tensor], req: MaskRequest) -> dict[str, torch.Tensor]:
        return {n: s.detach().reshape(-1) if tuple(s.shape) != tuple(req.shapes[n])
                else channel_scores(s, req.reduction, normalise=req.normalise) for n, s in scores.items()}

    def expand(self, keep, req, scores) -> dict[str, torch.Tensor]:
        return {n: channel_mask(keep[n], req.shapes[n]) for n in scores}


register("channel", lambda key, given: Channel() if key == "channel" else None)

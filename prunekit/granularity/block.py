"""``"block:RxC"`` (e.g. ``"block:4x4"``): whole R x C tiles of the 2-D view of a weight.

The 2-D view is ``[out, in*kh*kw]`` (PyTorch's row-major order); R must divide ``out`` and
C the column count (no padding). Narang et al. 2017, *Block-Sparse Recurrent Neural
Networks*; Gray et al. 2017, *GPU Kernels for Block-Sparse Weights*. A tile's score is the
reduction of its scores (default L2).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .base import Granularity, _shape, reduce_units, register


def tile_scores(score: torch.Tensor, rows: int, cols: int, reduction: str) -> torch.Tensor:
    """Tile scores ``[out/R, (in*kh*kw)/C]`` of the 2-D view of ``score``.

    >>> tile_scores(torch.ones(2, 4), 1, 2, "sum").tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    """
    x = score.reshape(score.shape[0], -1)
    tiles = x.reshape(x.shape[0] // rows, rows, x.shape[1] // cols, cols)
    return reduce_units(tiles, (1, 3), reduction)


block_scores = tile_scores  # the name before 0.2 (these are R x C tiles, not residual blocks)


def block_mask(keep: torch.Tensor, shape: Sequence[int], rows: int, cols: int) -> torch.Tensor:
    """Expand a tile keep-grid back to a mask of ``shape``."""
    r, c = keep.shape
    return keep[:, None, :, None].expand(r, rows, c, cols).reshape(_shape(shape)).clone()


@dataclass(frozen=True, eq=False, repr=False)
class BlockTiles(Granularity):
    """R x C tiles; ``rows`` and ``cols`` >= 1."""

    rows: int
    cols: int
    kind = "block"
    default_reduction = "l2"

    @property
    def name(self) -> str:
        return f"block:{self.rows}x{self.cols}"

    def check_applicable(self, name, shape) -> None:
        shape = _shape(shape)
        if len(shape) < 2:
            raise ValueError(f"granularity {self.name!r} needs a weight with an input dimension, but {name!r} "
                             f"has shape {list(shape)}; exclude it (exclude=[{name!r}])")
        out, cols = shape[0], math.prod(shape[1:])
        if out % self.rows or cols % self.cols:
            raise ValueError(f"granularity {self.name!r}: tiles of {self.rows}x{self.cols} must divide the 2-D view "
                             f"[{out}, {cols}] of {name!r} (shape {list(shape)}): R must divide {out} and C {cols}")

    def units(self, scores, req) -> dict[str, torch.Tensor]:
        return {n: tile_scores(s, self.rows, self.cols, req.reduction) for n, s in scores.items()}

    def expand(self, keep, req, scores) -> dict[str, torch.Tensor]:
        return {n: block_mask(keep[n], req.shapes[n], self.rows, self.cols) for n in scores}


def _parse(key: str, given: str) -> BlockTiles | None:
    if not (bl := re.fullmatch(r"block:(\d+)x(\d+)", key)):
        return None
    r, c = int(bl[1]), int(bl[2])
    if r < 1 or c < 1:
        raise ValueError(f"granularity {given!r}: block:RxC needs R >= 1 and C >= 1, got R={r}, C={c}")
    return BlockTiles(r, c)


register("block", _parse)

"""Granularity: what is removed together.

The survey's first axis (Cheng et al. 2024, Sec. 2) separates *unstructured* pruning
(single weights: specific speedup, needs sparse kernels) from *structured* pruning
(channels, heads, layers: universal speedup) and *semi-structured* patterns (N:M,
blocks, kernel patterns) in between. This module parses granularity names and maps
weight-level scores to the units a granularity removes.

Implemented now: ``"unstructured"``. The structured and semi-structured names of the
design (``"channel"``, ``"head"``, ``"layer"``, ``"N:M"``, ``"block:RxC"``, ``"pattern"``)
are recognised and rejected with a clear error until their chapter lands.
"""

from __future__ import annotations

import re

GRANULARITIES = ("unstructured",)
PLANNED = ("channel", "head", "layer", "N:M (e.g. '2:4')", "block:RxC (e.g. 'block:4x4')", "pattern")


def check_granularity(granularity: str) -> str:
    """Return the canonical granularity name or raise ``ValueError``/``TypeError``."""
    if not isinstance(granularity, str):
        raise TypeError(f"granularity must be a string such as 'unstructured', got {type(granularity).__name__}")
    g = granularity.strip().lower()
    if g in GRANULARITIES:
        return g
    planned = g in ("channel", "head", "layer", "pattern") or re.fullmatch(r"\d+:\d+|block:\d+x\d+", g)
    detail = " (planned for chapter 2, not implemented yet)" if planned else ""
    raise ValueError(f"unknown granularity {granularity!r}{detail}; implemented granularities: {list(GRANULARITIES)}")

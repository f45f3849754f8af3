"""Channel spaces: the sets of channels that must be kept or removed together.

Every tensor's channel dim is described by a list of *segments* ``(space, repeat, idx)``,
one per concatenated part: a segment covers ``size * repeat`` consecutive channels
(features), channel ``c`` of the space being the ``repeat`` features from ``c * repeat``;
``idx`` (``None``: the whole space in its order) lists the space's channels at the
segment's positions when a shuffle or a split reordered or selected them.

Spaces that must keep the same channels are merged by union-find into one *group*
(cf. Torch-Pruning's dependency graph, Fang et al., CVPR 2023).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Space", "Spaces", "Segments"]

Segments = list  # [(space id, repeat, idx tensor or None)]


@dataclass
class Space:
    """One channel space and what touches it (module names unless said otherwise)."""

    size: int
    fixed: bool = False                                # the model's inputs/outputs: never removed
    producers: list = field(default_factory=list)      # Conv/Linear writing it: they vote
    bns: list = field(default_factory=list)            # BatchNorms (per-channel members)
    norms: list = field(default_factory=list)          # norms across the channels (LayerNorm ...) that read it
    depthwise: list = field(default_factory=list)      # depthwise convs (members, no vote)
    consumers: list = field(default_factory=list)      # (module name, repeat): their input columns
    barriers: list = field(default_factory=list)       # descriptions of constructs it cannot pass
    partitions: list = field(default_factory=list)     # group counts of the grouped convs on it
    params: list = field(default_factory=list)         # per-channel parameters/buffers (qualified names)


_LISTS = ("producers", "bns", "norms", "depthwise", "consumers", "barriers", "partitions", "params")


class Spaces:
    """Union-find over :class:`Space` s."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.spaces: list[Space] = []

    def new(self, size: int, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(Space(size, fixed))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int, where: str) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        sa, sb = self.spaces[a], self.spaces[b]
        if sa.size != sb.size:
            raise ValueError(f"{where} joins channel groups of sizes {sa.size} and {sb.size}, "
                             "which channel surgery cannot follow")
        self.parent[b] = a
        sa.fixed |= sb.fixed
        for f in _LISTS:
            getattr(sa, f).extend(getattr(sb, f))
        return a

    def space(self, i: int) -> Space:
        return self.spaces[self.find(i)]

    def positions(self, segs: Segments) -> list[tuple[int, int]]:
        """``(space, channel)`` at each channel position (segments of repeat 1)."""
        out = []
        for sid, _, idx in segs:
            chans = range(self.space(sid).size) if idx is None else idx.tolist()
            out.extend((sid, c) for c in chans)
        return out

    def segments(self, pos: list[tuple[int, int]]) -> Segments:
        """The inverse of :meth:`positions`: runs of one space become one segment."""
        out: list = []
        for sid, c in pos:
            if out and out[-1][0] == sid:
                out[-1][1].append(c)
            else:
                out.append((sid, [c]))
        segs = []
        for sid, chans in out:
            whole = chans == list(range(self.space(sid).size))
            segs.append((sid, 1, None if whole else torch.tensor(chans, dtype=torch.long)))
        return segs

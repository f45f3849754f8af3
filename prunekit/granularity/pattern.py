"""``"pattern"``: kernel patterns plus connectivity pruning, for 3 x 3 conv weights.

PatDNN (Niu et al. 2020, *PatDNN: Achieving Real-Time DNN Execution on Mobile Devices with
Pattern-based Weight Pruning*) and PCONV (Ma et al. 2020): every kernel keeps exactly the 4
entries of one pattern of :data:`PATTERNS`, the one whose kept scores reduce highest
(default: the largest sum; ties: the first pattern). *Connectivity pruning* then removes
whole kernels (the lowest kernel scores) so that each layer's weight sparsity is as close as
possible to the target (:func:`pattern_kernel_count`), at least 5/9. Per layer by
construction: ``scope`` is validated and ignored.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from .base import _TOL, REDUCTIONS, Granularity, _float, register

#: The kernel-pattern library: 8 masks of a 3 x 3 kernel, each keeping 4 entries, all
#: containing the centre and 4-connected, in the spirit of PatDNN's library (which always
#: keeps the central weight): patterns 0-3 are the four "T" shapes (centre + 3 of its 4
#: neighbours), patterns 4-7 the four 2 x 2 squares that contain the centre.
PATTERNS: torch.Tensor = torch.tensor([
    [[0, 1, 0], [1, 1, 1], [0, 0, 0]],  # T up
    [[0, 0, 0], [1, 1, 1], [0, 1, 0]],  # T down
    [[0, 1, 0], [1, 1, 0], [0, 1, 0]],  # T left
    [[0, 1, 0], [0, 1, 1], [0, 1, 0]],  # T right
    [[1, 1, 0], [1, 1, 0], [0, 0, 0]],  # square top-left
    [[0, 1, 1], [0, 1, 1], [0, 0, 0]],  # square top-right
    [[0, 0, 0], [1, 1, 0], [1, 1, 0]],  # square bottom-left
    [[0, 0, 0], [0, 1, 1], [0, 1, 1]],  # square bottom-right
], dtype=torch.bool)
PATTERN_KEPT = 4
KERNEL_AREA = 9
#: The sparsity pattern pruning alone reaches (5 of every 9 weights removed).
PATTERN_MIN_SPARSITY = 1 - PATTERN_KEPT / KERNEL_AREA


def pattern_kernel_count(n_kernels: int, sparsity: float, area: int = KERNEL_AREA, kept: int = PATTERN_KEPT) -> int:
    """Kernels to remove whole so that a pattern-pruned layer's sparsity is closest to ``sparsity``.

    Pattern pruning keeps ``kept`` of every ``area`` weights; removing ``k`` of ``K``
    kernels gives sparsity ``(K*(area-kept) + k*kept) / (K*area)``, linear in ``k``, so
    the closest count is ``round(K * (area*s - (area-kept)) / kept)`` clipped to
    ``[0, K]``. It is computed exactly (with :class:`fractions.Fraction`), and an exact tie
    between two counts goes to the even one (Python's ``round``), so the count never
    depends on floating-point rounding.

    >>> pattern_kernel_count(8, 5 / 9), pattern_kernel_count(8, 0.8), pattern_kernel_count(8, 0.75)
    (0, 4, 4)
    """
    k = round(n_kernels * (area * Fraction(sparsity) - (area - kept)) / kept)
    return max(0, min(n_kernels, k))


def pattern_scores(score: torch.Tensor, reduction: str) -> torch.Tensor:
    """Score ``[out, in, P]`` of every library pattern on every 3 x 3 kernel.

    A pattern's score is the reduction of the 4 scores it keeps (``-inf`` counts as 0;
    a kernel whose scores are all ``-inf`` gets ``-inf`` for every pattern).
    """
    x = _float(score).reshape(score.shape[0], score.shape[1], KERNEL_AREA)
    removed = torch.isneginf(x)
    gone = removed.all(dim=-1, keepdim=True)
    x = x.masked_fill(removed, 0.0)
    lib = PATTERNS.reshape(len(PATTERNS), KERNEL_AREA).to(x.dtype).to(x.device).T  # [9, P]
    if reduction == "sum":
        r = x @ lib
    elif reduction == "mean":
        r = (x @ lib) / PATTERN_KEPT
    elif reduction == "l1":
        r = x.abs() @ lib
    elif reduction == "l2":
        r = (x.square() @ lib).sqrt()
    else:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    return r.masked_fill(gone, float("-inf"))


def pattern_choice(score: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For every kernel: the index of the best pattern (first on ties) and its score."""
    r = pattern_scores(score, reduction)
    best = r.max(dim=-1).values
    idx = torch.argmax((r == best[..., None]).to(torch.uint8), dim=-1)  # the first maximal pattern
    return idx, best


def pattern_mask(idx: torch.Tensor, keep_kernels: torch.Tensor) -> torch.Tensor:
    """Mask ``[out, in, 3, 3]``: the chosen pattern of every kept kernel, zeros elsewhere."""
    return PATTERNS.to(idx.device)[idx] & keep_kernels[..., None, None]


def _lowest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over ``flat`` without its ``k`` lowest entries, ties to the earlier index
    (the rule of :func:`prunekit.allocation.prune_lowest`: a stable ascending sort)."""
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        keep[torch.sort(flat, stable=True).indices[:k]] = False
    return keep


class Pattern(Granularity):
    """Kernel patterns (4 of 9) plus connectivity pruning; 3 x 3 conv weights only."""

    kind = "pattern"
    default_reduction = "sum"
    allocates = False

    def fixed_sparsity(self) -> float:
        return PATTERN_MIN_SPARSITY

    def check_sparsity_value(self, s: float, given: object) -> None:
        if s < PATTERN_MIN_SPARSITY - _TOL:
            raise ValueError(f"granularity 'pattern' keeps 4 of the 9 weights of every kernel, so sparsity must be "
                             f"at least 5/9 = {PATTERN_MIN_SPARSITY:.4f} (higher values also remove whole "
                             f"kernels), got sparsity={given!r}")

    def check_applicable(self, name, shape) -> None:
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4 or shape[2:] != (3, 3):
            raise ValueError(f"granularity 'pattern' needs conv weights with 3x3 kernels [out, in, 3, 3], but "
                             f"{name!r} has shape {list(shape)}; restrict pruning to 3x3 convs with "
                             f"include=/exclude=")

    def local_masks(self, scores, req) -> dict[str, torch.Tensor]:
        out = {}
        for n, s in scores.items():
            idx, kernel_score = pattern_choice(s, req.reduction)
            count = kernel_score.numel()  # every layer keeps a kernel (never everything)
            k = min(pattern_kernel_count(count, req.sparsity[n]), count - 1)
            keep = _lowest(_float(kernel_score).reshape(-1), k).view(kernel_score.shape)
            out[n] = pattern_mask(idx, keep)
        return out


register("pattern", lambda key, given: Pattern() if key == "pattern" else None)

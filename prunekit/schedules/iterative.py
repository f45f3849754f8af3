"""Iterative pruning in rounds: the cumulative sparsity after each round of prune -> retrain.

Each round removes the same fraction of the weights that remain, as in iterative magnitude
pruning and the lottery-ticket experiments (Han et al. 2015; Frankle & Carbin 2019, who prune
p% of the remaining weights per round).
"""

from __future__ import annotations

from .._validate import check_fraction, check_int


def iterative(final_sparsity: float, rounds: int) -> list[float]:
    """Cumulative sparsities s_k = 1 - (1 - s_f) ** (k / rounds) for k = 1, ..., ``rounds``.

    Every round keeps the same fraction ``(1 - s_f) ** (1 / rounds)`` of the surviving weights,
    so after the last round exactly ``final_sparsity`` is pruned (the last entry *is*
    ``final_sparsity``, not a rounded power). One round is one-shot pruning.

    Raises:
        TypeError: a non-number ``final_sparsity`` or a non-int ``rounds``.
        ValueError: ``final_sparsity`` outside [0, 1), ``rounds < 1``.

    >>> [round(s, 4) for s in iterative(0.875, 3)]
    [0.5, 0.75, 0.875]
    """
    s_f = check_fraction("final_sparsity", final_sparsity)
    n = check_int("rounds", rounds, minimum=1)
    out = [1.0 - (1.0 - s_f) ** (k / n) for k in range(1, n)]
    return [min(max(s, 0.0), s_f) for s in out] + [s_f]

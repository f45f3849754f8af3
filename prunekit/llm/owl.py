"""OWL: non-uniform layer sparsity from outlier ratios (Yin et al. 2024).

Yin, Wu, Shen, Li, Wang, Jaiswal, Pechenizkiy, Liang, Wang & Liu, *Outlier Weighed Layerwise
Sparsity (OWL): A Missing Secret Sauce for Pruning LLMs to High Sparsity* (ICML 2024; code:
github.com/luuyin/OWL). For every decoder block, the Wanda scores ``A_ij = |W_ij| · ||X_j||_2``
of all its Linears (on the dense model's calibration inputs) are pooled, and the block's
*outlier ratio* ``D`` is the percentage of scores above ``M`` times their mean. Blocks with more
outliers are pruned less: the ratios are scaled to ``[0, 2λ]``, centred on their mean, and added
to the target density ``1 - s``, so the block sparsities span an interval of width ``2λ`` and
average to ``s``:

    density_l = 2λ (D_l - min D) / (max D - min D) - mean(...) + (1 - s),   sparsity_l = 1 - density_l.

Feed the result to :func:`prunekit.llm.prune_sequential` as ``sparsity=`` (one value per block).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._validate import check_int, check_model, check_number, check_sparsity
from .layerwise import check_linear
from .sequential import _capture_first_inputs, _check_tokens, _linears, _run, _Stats, find_blocks

__all__ = ["outlier_ratios", "owl_sparsities"]


@torch.no_grad()
def outlier_ratios(model: nn.Module, calib_tokens: torch.Tensor, *, m: float = 5.0, nsamples: int | None = None,
                   blocks: nn.ModuleList | None = None, batch_size: int = 1,
                   forward: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> list[float]:
    """Per decoder block, the percentage of Wanda scores ``|W_ij|·||X_j||`` (all its Linears pooled)
    above ``m`` times their mean, on the dense model (dense outputs fed forward). The model is not changed."""
    check_model(model)
    m = check_number("m", m, low=0.0, low_open=True)
    blocks = find_blocks(model) if blocks is None else blocks
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or not len(blocks):
        raise TypeError(f"blocks must be a non-empty nn.ModuleList of decoder blocks, got {type(blocks).__name__}")
    plans = [_linears(b) for b in blocks]
    for i, plan in enumerate(plans):
        for name, lin in plan.items():
            check_linear(lin, f"blocks[{i}].{name}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    tokens = _check_tokens(calib_tokens, nsamples)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    ratios: list[float] = []
    try:
        batches = _capture_first_inputs(model, blocks[0], tokens.to(device), batch_size, forward)
        for block, linears in zip(blocks, plans):
            stats = {name: _Stats(lin, "wanda") for name, lin in linears.items()}
            handles = [lin.register_forward_hook(lambda _m, inp, _o, st=stats[name]: st.add(inp[0]))
                       for name, lin in linears.items()]
            try:
                outs = [_run(block, batch).detach() for batch in batches]
            finally:
                for h in handles:
                    h.remove()
            scores = [(lin.weight.detach().abs().to(stats[name].acc.dtype) * stats[name].acc.sqrt()).flatten()
                      for name, lin in linears.items() if stats[name].n]
            if scores:
                pooled = torch.cat(scores)
                ratios.append(100.0 * float((pooled > m * pooled.mean()).double().mean()))
            else:
                ratios.append(0.0)
            batches = [(o, b[1], b[2]) for o, b in zip(outs, batches)]
    finally:
        model.train(was_training)
    return ratios


def owl_sparsities(ratios: Sequence[float], sparsity: float, *, lam: float = 0.08) -> list[float]:
    """Block sparsities from outlier ratios (:func:`outlier_ratios`), OWL's mapping: spread over an
    interval of width ``2 lam``, mean ``sparsity``, the most outlier-rich block pruned least. All
    ratios equal: every block gets ``sparsity``. ``ValueError`` if a block would leave [0, 1)."""
    s = check_sparsity(sparsity)
    lam = check_number("lam", lam, low=0.0)
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not len(ratios):
        raise TypeError(f"ratios must be a non-empty sequence of numbers (one per block), got {type(ratios).__name__}")
    d = torch.tensor([check_number("ratios", r, low=0.0) for r in ratios], dtype=torch.float64)
    spread = float(d.max() - d.min())
    if spread == 0.0:
        return [s] * len(d)
    density = (d - d.min()) / spread * (2 * lam)
    density = density - density.mean() + (1 - s)
    out = [float(1 - x) for x in density]
    if min(out) < 0 or max(out) >= 1:
        raise ValueError(f"lam={lam:g} is too large for sparsity={s:g}: the block sparsities would span "
                         f"[{min(out):.3g}, {max(out):.3g}], outside [0, 1); use a smaller lam")
    return out

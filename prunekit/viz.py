"""Pictures of pruning: mask heat-maps, per-layer sparsity bars, accuracy-sparsity curves.

Each function draws on ``ax`` (or a new figure) and returns the Axes, so figures
compose and can be fed to :func:`prunekit.widgets.slider` frame by frame.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from torch import nn

from .core.masks import get_masks

#: Kept weights are blue (darker = larger ``|w|``); pruned weights are orange, a hue no kept
#: weight can take, so even 20% scattered zeros are visible.
KEPT, PRUNED = "#1f4e79", "#f39c4a"

#: The book's figure style: drawn at the column's width (7 in at 100 dpi = 700 px, the
#: width of the site's text column), with text of 11 pt, so that it stays >= 10 pt on a
#: desktop page. Applied by :func:`use_book_style`.
BOOK_STYLE = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    # matplotlib's default colours without its orange, which here means "pruned"
    "axes.prop_cycle": plt.cycler(color=["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]),
}


def use_book_style() -> None:
    """Set matplotlib's defaults to the book's figure style (:data:`BOOK_STYLE`).

    Figures then fill the site's text column with readable text. Use
    ``figsize=(7, h)`` when a figure needs another height, never a larger width.
    """
    plt.rcParams.update(BOOK_STYLE)


def _as_2d(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.dim() == 1:
        t = t[None, :]
    return t.reshape(t.shape[0], -1).float().numpy()


def mask_heatmap(mask: torch.Tensor, weight: torch.Tensor | None = None, *, ax=None,
                 title: str | None = None, max_cols: int | None = None):
    """Show a layer's mask: rows = output units, columns = inputs (x kernel positions).

    With ``weight``, kept entries are shaded by ``|w|`` (darker blue = larger, with a colour
    bar) and pruned entries are orange; without it the picture is binary (dark blue =
    kept, orange = pruned). A legend names the pruned colour.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if weight is not None and weight.shape != mask.shape:
        raise ValueError(f"weight has shape {tuple(weight.shape)} but mask has shape {tuple(mask.shape)}")
    ax = ax if ax is not None else plt.figure(figsize=(7, 3)).gca()
    m = _as_2d(mask.bool())
    cols = slice(None, max_cols)
    if weight is None:
        image = ax.imshow(m[:, cols], cmap=ListedColormap([PRUNED, KEPT]), vmin=0, vmax=1,
                          aspect="auto", interpolation="nearest")
        bar = ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02, ticks=[0.25, 0.75])
        bar.ax.set_yticklabels(["pruned", "kept"])
    else:
        w = np.abs(_as_2d(weight)) * m
        shown = np.ma.masked_where(m == 0, w)[:, cols]
        # Blues from 30% on: the smallest kept weight is light blue, never white
        blues = ListedColormap(plt.get_cmap("Blues")(np.linspace(0.3, 1.0, 256)))
        image = ax.imshow(shown, cmap=blues.with_extremes(bad=PRUNED, under=PRUNED), vmin=0,
                          vmax=max(float(w.max()), 1e-12), aspect="auto", interpolation="nearest")
        # the colour bar's orange end (extend="min") is the pruned colour
        ax.figure.colorbar(image, ax=ax, label="|w| kept (orange: pruned)", fraction=0.05,
                           pad=0.02, extend="min")
    kind = "input channel x kernel position" if mask.dim() > 2 else "input"
    ax.set_xlabel(f"{kind}" + (f" (first {max_cols} of {m.shape[1]})"
                               if max_cols and m.shape[1] > max_cols else ""))
    ax.set_ylabel("output unit (filter)" if mask.dim() > 2 else "output unit")
    kept = float(m.mean())
    ax.set_title(title if title is not None else f"kept {kept:.0%} of {m.size:,} weights")
    return ax


def _sparsities(obj) -> dict[str, float]:
    if isinstance(obj, nn.Module):
        masks = get_masks(obj)
        if not masks:
            from .metrics import layer_sparsity
            return layer_sparsity(obj)
    else:
        masks = obj
    return {n: 1.0 - float(m.float().mean()) for n, m in masks.items()}


def sparsity_bars(series: Mapping[str, object] | nn.Module, *, ax=None, title: str | None = None):
    """Per-layer sparsity as grouped bars.

    ``series`` is a model, a masks dict, or ``{label: model or masks}`` to compare
    allocations (e.g. layer-wise vs global).
    """
    if isinstance(series, nn.Module) or (
        isinstance(series, Mapping) and series and all(isinstance(v, torch.Tensor) for v in series.values())
    ):
        series = {"": series}
    data = {label: _sparsities(v) for label, v in series.items()}
    layers = list(next(iter(data.values())))
    ax = ax if ax is not None else plt.figure(figsize=(7, 3)).gca()
    width = 0.8 / len(data)
    x = np.arange(len(layers))
    for i, (label, sp) in enumerate(data.items()):
        ax.bar(x + (i - (len(data) - 1) / 2) * width, [sp.get(n, 0.0) for n in layers], width,
               label=label or None)
    ax.set_xticks(x, [n.removesuffix(".weight") for n in layers], rotation=45, ha="right")
    ax.set_ylim(0, 1.18 if len(data) > 1 else 1)  # room for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("sparsity (fraction pruned)")
    ax.set_xlabel("layer")
    if title:
        ax.set_title(title)
    if len(data) > 1:
        ax.legend(loc="upper center", ncol=len(data), frameon=False)
    return ax


def accuracy_curve(results: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, ax=None,
                   dense_accuracy: float | None = None, chance: float | None = None,
                   title: str | None = None, marker: float | None = None):
    """Accuracy against sparsity, one line per method: ``{label: (sparsities, accuracies)}``."""
    ax = ax if ax is not None else plt.figure(figsize=(7, 3.5)).gca()
    for label, (xs, ys) in results.items():
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    if dense_accuracy is not None:
        ax.axhline(dense_accuracy, color="gray", ls="--", lw=1, label="dense")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label="chance")
    if marker is not None:
        ax.axvline(marker, color="black", lw=1, alpha=0.5)
    ax.set_xlabel("sparsity (fraction of weights pruned)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return ax

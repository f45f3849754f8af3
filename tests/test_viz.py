"""viz: figures draw what they are given."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import prunekit as pk  # noqa: E402
from prunekit import viz  # noqa: E402
from helpers import tiny_cnn  # noqa: E402


def test_mask_heatmap_shows_the_mask():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    ax = viz.mask_heatmap(mask)
    shown = ax.images[0].get_array()
    assert np.array_equal(np.asarray(shown), mask.numpy().astype(float))
    assert ax.get_xlabel() and ax.get_ylabel() and "50%" in ax.get_title()
    conv = torch.rand(4, 2, 3, 3) > 0.5
    ax = viz.mask_heatmap(conv, weight=torch.randn(4, 2, 3, 3))
    img = ax.images[0].get_array()
    assert img.shape == (4, 18) and np.array_equal(img.mask, ~conv.reshape(4, 18).numpy())
    with pytest.raises(ValueError, match="shape"):
        viz.mask_heatmap(conv, weight=torch.randn(3, 3))
    plt.close("all")


def test_sparsity_bars_heights_equal_layer_sparsity():
    a, b = tiny_cnn(), tiny_cnn()
    pk.prune(a, 0.8, scope="layer")
    pk.prune(b, 0.8, scope="global")
    ax = viz.sparsity_bars({"layer-wise": a, "global": b})
    heights = [p.get_height() for p in ax.patches]
    expected = list(pk.layer_sparsity(a).values()) + list(pk.layer_sparsity(b).values())
    assert np.allclose(heights, expected)
    assert ax.get_ylabel().startswith("sparsity")
    plt.close("all")


def test_accuracy_curve_lines():
    ax = viz.accuracy_curve({"m": ([0, 0.5, 0.9], [0.9, 0.85, 0.3])}, dense_accuracy=0.9, chance=0.1)
    assert len(ax.lines) == 3
    assert list(ax.lines[0].get_ydata()) == [0.9, 0.85, 0.3]
    plt.close("all")


def test_mask_heatmap_pruned_cells_have_their_own_colour():
    """Small kept weights must not look like pruned ones (the pruned colour is no shade of
    the kept colormap), and a colour bar says what the shading means."""
    torch.manual_seed(0)
    weight = torch.randn(8, 16) * 1e-3
    weight[0, 0] = 1.0                      # one large weight: every other kept one is tiny
    mask = torch.rand(8, 16) > 0.2
    mask[0, 0] = True
    fig, ax = plt.subplots()
    viz.mask_heatmap(mask, weight=weight, ax=ax)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    image = ax.images[0]
    pruned = np.array(matplotlib.colors.to_rgb(viz.PRUNED))
    cmap = image.get_cmap()
    kept_colours = cmap(np.linspace(0, 1, 256))[:, :3]
    # the pruned colour is far from every colour a kept weight can take
    assert np.min(np.linalg.norm(kept_colours - pruned, axis=1)) > 0.3
    assert tuple(cmap.get_bad()[:3]) == tuple(pruned)
    assert len(fig.axes) == 2 and "|w|" in fig.axes[1].get_ylabel()   # the colour bar
    assert tuple(cmap.get_under()[:3]) == tuple(pruned)             # the bar's orange end
    assert rgb.shape[0] > 0
    plt.close("all")


def test_book_style_sets_column_width_and_readable_text():
    with matplotlib.rc_context():
        viz.use_book_style()
        fig = plt.figure()
        width_px = fig.get_figwidth() * fig.dpi
        assert 650 <= width_px <= 720
        assert matplotlib.rcParams["font.size"] >= 10
        assert min(matplotlib.font_manager.FontProperties(size=matplotlib.rcParams[k]).get_size_in_points()
                   for k in ("xtick.labelsize", "ytick.labelsize", "legend.fontsize")) >= 10
    plt.close("all")


def test_book_style_never_draws_a_line_in_the_pruned_colour():
    with matplotlib.rc_context():
        viz.use_book_style()
        colours = [matplotlib.colors.to_rgb(c["color"]) for c in matplotlib.rcParams["axes.prop_cycle"]]
        pruned = np.array(matplotlib.colors.to_rgb(viz.PRUNED))
        assert min(np.linalg.norm(np.array(c) - pruned) for c in colours) > 0.25

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

"""The data-free criteria: magnitude and random."""

import torch

import prunekit as pk
from helpers import assert_untouched, snapshot, tiny_cnn


def test_magnitude_is_abs_of_effective_weight():
    model = tiny_cnn()
    snap = snapshot(model)
    scores = pk.score(model, "magnitude")
    assert_untouched(model, snap)
    params = dict(model.named_parameters())
    assert list(scores) == ["0.weight", "3.weight", "6.weight"]
    for n, s in scores.items():
        assert torch.equal(s, params[n].detach().abs())
        assert not s.requires_grad
    masks = pk.prune(model, 0.5)
    again = pk.score(model, "MAGNITUDE")  # case-insensitive; masked weights score 0
    for n in masks:
        assert torch.all(again[n][~masks[n]] == 0)
        assert torch.equal(again[n][masks[n]], scores[n][masks[n]])


def test_random_is_seeded_and_uniform():
    model = tiny_cnn()
    a, b, c = (pk.score(model, "random", seed=s) for s in (0, 0, 1))
    for n in a:
        assert torch.equal(a[n], b[n])
        assert not torch.equal(a[n], c[n])
    flat = torch.cat([s.flatten() for s in a.values()])
    assert 0 <= flat.min() and flat.max() < 1 and abs(flat.mean().item() - 0.5) < 0.05


def test_random_scores_are_not_the_init_stream_of_the_same_seed():
    """A Linear initialised after torch.manual_seed(0) draws kaiming-uniform weights from the
    stream Generator().manual_seed(0) yields; "random" with seed 0 must not rank like them."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64, bias=False)
    u = torch.rand(64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(layer.weight, (2 * u - 1) / 8)  # the coincidence this guards against
    r = pk.score(layer, "random", seed=0)["weight"]
    corr = torch.corrcoef(torch.stack([r.flatten(), layer.weight.detach().flatten()]))[0, 1]
    assert abs(corr) < 0.1


def test_random_pruning_is_not_magnitude_pruning():
    m1, m2 = tiny_cnn(), tiny_cnn()
    a = pk.prune(m1, 0.5, criterion="random")
    b = pk.prune(m2, 0.5, criterion="magnitude")
    assert any(not torch.equal(a[n], b[n]) for n in a)

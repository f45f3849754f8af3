"""EagleEye's width search: candidates meet the MAC window, adaptive BN recomputes exact statistics."""

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.fusion import adaptive_bn, eagleeye_search
from prunekit.methods.learned.search_space import SearchSpace, as_batch


@pytest.fixture(scope="module")
def setup():
    net = pk.zoo.load("cnn-digits")
    train, val, _ = pk.data.digits(validation=0.5)
    return net, as_batch(val), as_batch(train, n=128)


def test_adaptive_bn_statistics_are_those_of_the_batch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
    net.eval()
    x = torch.randn(16, 1, 6, 6)
    before = net[0].weight.detach().clone()
    adaptive_bn(net, [(x[:8], None), (x[8:], None)])
    with torch.no_grad():
        h = net[0](x)
    # the plain average of the two batches' statistics (cumulative average, momentum=None)
    means = [h[:8].mean((0, 2, 3)), h[8:].mean((0, 2, 3))]
    vars_ = [h[:8].var((0, 2, 3), unbiased=True), h[8:].var((0, 2, 3), unbiased=True)]
    assert torch.allclose(net[1].running_mean, (means[0] + means[1]) / 2, atol=1e-6)
    assert torch.allclose(net[1].running_var, (vars_[0] + vars_[1]) / 2, atol=1e-5)
    assert net[1].momentum == 0.3 and not net.training
    assert torch.equal(net[0].weight.detach(), before)
    with pytest.raises(ValueError, match="batches"):
        adaptive_bn(net, [])
    with pytest.raises(TypeError, match="batches"):
        adaptive_bn(net, 3)


def test_eagleeye_candidates_window_determinism_and_winner(setup):
    net, (xv, yv), (xt, _) = setup
    kwargs = dict(budget=0.5, calibration=xt, validation=(xv, yv), candidates=4, tolerance=0.05, seed=3)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    r = eagleeye_search(net, xv[:1], **kwargs)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())        # model untouched
    assert len(r.history) == 4 and r.method == "eagleeye"
    assert all(0.45 <= h["mac_fraction"] <= 0.5 for h in r.history)
    assert r.best_reward == max(h["reward"] for h in r.history)
    assert r.history == eagleeye_search(net, xv[:1], **kwargs).history                # seeded
    space = SearchSpace(net, xv[:1])
    winner = adaptive_bn(space.compact(r.best_ratios), xt)
    assert pk.count_macs(winner, xv[:1])[0] == space.macs(r.best_ratios)
    assert pk.count_macs(winner, xv[:1])[0] / space.total_macs == pytest.approx(r.best_mac_fraction)
    with torch.no_grad():
        assert float((winner(xv).argmax(1) == yv).float().mean()) == pytest.approx(r.best_reward)
    # the inherited statistics are worse than recalibrated ones on average (EagleEye's point)
    assert sum(h["reward"] for h in r.history) > sum(h["vanilla"] for h in r.history)


def test_eagleeye_bad_input(setup):
    net, (xv, yv), (xt, _) = setup
    ok = dict(budget=0.5, calibration=xt, validation=(xv, yv), candidates=2)
    for change, exc, word in [(dict(budget=0), ValueError, "budget"), (dict(tolerance=0), ValueError, "tolerance"),
                              (dict(candidates=0), ValueError, "candidates"), (dict(max_ratio=1), ValueError, "max_ratio"),
                              (dict(validation=xv), TypeError, "validation"), (dict(calibration=[]), ValueError, "calibration"),
                              (dict(budget=0.01), ValueError, "budget"),
                              (dict(budget=0.99, tolerance=0.01, max_tries=3), ValueError, "max_tries")]:
        with pytest.raises(exc, match=word):
            eagleeye_search(net, xv[:1], **{**ok, **change})
    with pytest.raises(TypeError, match="model"):
        eagleeye_search("net", xv[:1], **ok)

"""Channel criteria and LAMP against hand-computed answers: l1_filter, fpgm, lamp, apoz,
mean_activation, hrank, bn_scale."""

import math

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.criteria._common import following_batchnorm
from prunekit.models import MLP, ResNet, SmallCNN
from prunekit.core.targets import find_targets


def _set(module: nn.Module, **tensors):
    with torch.no_grad():
        for k, v in tensors.items():
            getattr(module, k).copy_(v)


# --------------------------------------------------------------------------- norms

def test_l1_filter_is_the_hand_sum_per_filter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 2), nn.Flatten(), nn.Linear(3 * 4, 2))
    s = pk.score(model, "l1_filter")
    w = model[0].weight.detach()
    expected = [sum(abs(float(w[o, i, a, b])) for i in range(2) for a in range(2) for b in range(2)) for o in range(3)]
    assert s["0.weight"].tolist() == pytest.approx(expected)
    assert s["2.weight"].tolist() == pytest.approx(model[2].weight.detach().abs().sum(1).tolist())


def test_lamp_on_a_hand_vector():
    # ascending |w|: 0.5, 1, 2, 3 -> squares 0.25, 1, 4, 9
    lin = nn.Linear(4, 1, bias=False)
    _set(lin, weight=torch.tensor([[3.0, -1.0, 2.0, 0.5]]))
    s = pk.score(lin, "lamp")["weight"]
    expected = [9 / 9, 1 / (1 + 4 + 9), 4 / (4 + 9), 0.25 / (0.25 + 1 + 4 + 9)]
    assert s.flatten().tolist() == pytest.approx(expected)


def test_lamp_is_layer_adaptive_but_orders_a_layer_like_magnitude():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight.mul_(100)  # a layer with much larger weights
    lamp, mag = pk.score(model, "lamp"), pk.score(model, "magnitude")
    for n in lamp:
        assert torch.equal(lamp[n].flatten().argsort(), mag[n].flatten().argsort())
        assert float(lamp[n].max()) == pytest.approx(1.0)
    # global magnitude would prune only the small layer; LAMP prunes both
    masks = pk.make_masks(lamp, 0.5, scope="global")
    assert all(0 < int((~m).sum()) < m.numel() for m in masks.values())


def fpgm_layer(centre=(0.0, 0.0)):
    """Five 1x2 filters: c + e1, c - e1, c (index 2), c + e2, c - e2."""
    c = torch.tensor(centre)
    pts = torch.stack([c + torch.tensor([1.0, 0]), c - torch.tensor([1.0, 0]), c,
                       c + torch.tensor([0, 1.0]), c - torch.tensor([0, 1.0])])
    conv = nn.Conv2d(1, 5, (1, 2), bias=False)
    _set(conv, weight=pts.view(5, 1, 1, 2))
    return conv


def test_fpgm_ranks_the_filter_at_the_geometric_median_last():
    s = pk.score(fpgm_layer(), "fpgm")["weight"]
    side = 1 + 2 + 2 * math.sqrt(2)  # to the centre, to the opposite filter, to the two others
    assert s.tolist() == pytest.approx([side, side, 4.0, side, side])
    assert int(s.argmin()) == 2
    med = pk.score(fpgm_layer(), "fpgm", method="median")["weight"]
    assert med.tolist() == pytest.approx([1, 1, 0, 1, 1], abs=1e-6)


def test_fpgm_is_not_smaller_norm_less_important():
    """Shifted by c = (3, 3): L1 would prune (2, 3); FPGM prunes the redundant centre (3, 3)."""
    conv = fpgm_layer((3.0, 3.0))
    assert int(pk.score(conv, "l1_filter")["weight"].argmin()) == 1
    assert int(pk.score(conv, "fpgm")["weight"].argmin()) == 2
    assert int(pk.score(conv, "fpgm", method="median")["weight"].argmin()) == 2


# --------------------------------------------------------------------------- activations

def sign_conv(bn_shift=None):
    """Channel 0 = ReLU(x), channel 1 = ReLU(-x) (1x1 conv), optionally with BN in between."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    _set(conv, weight=torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    if bn_shift is None:
        return nn.Sequential(conv, nn.ReLU())
    bn = nn.BatchNorm2d(2)
    _set(bn, bias=torch.full((2,), bn_shift))
    return nn.Sequential(conv, bn, nn.ReLU())


def sign_input():
    x = torch.zeros(2, 1, 3, 3)  # 18 positions: 7 positive, 5 negative, 6 zero
    x.view(-1)[:7] = torch.arange(1.0, 8.0)
    x.view(-1)[7:12] = -torch.arange(1.0, 6.0)
    return x


def test_apoz_counts_zeros_exactly():
    x = sign_input()
    data = [(x[:1], torch.zeros(1)), (x[1:], torch.zeros(1))]
    s = pk.score(sign_conv(), "apoz", data=data)["0.weight"]
    assert s.tolist() == pytest.approx([7 / 18, 5 / 18])  # 1 - APoZ: fraction of non-zeros
    m = pk.score(sign_conv(), "mean_activation", data=data)["0.weight"]
    assert m.tolist() == pytest.approx([sum(range(1, 8)) / 18, sum(range(1, 6)) / 18])


def test_activations_are_read_after_the_following_batchnorm():
    data = [(sign_input(), torch.zeros(2))]
    s = pk.score(sign_conv(bn_shift=100.0), "apoz", data=data)["0.weight"]
    assert s.tolist() == pytest.approx([1.0, 1.0])  # BN shifts everything positive: no zeros
    s = pk.score(sign_conv(bn_shift=-100.0), "apoz", data=data)["0.weight"]
    assert s.tolist() == pytest.approx([0.0, 0.0])


def test_hrank_averages_feature_map_ranks():
    torch.manual_seed(0)
    n, h = 3, 6
    rank1 = torch.einsum("ni,nj->nij", torch.rand(n, h) + 0.1, torch.rand(n, h) + 0.1)
    full = torch.rand(n, h, h) + 5 * torch.eye(h)  # positive, diagonally dominant: rank h
    x = torch.stack([rank1, full], 1)
    conv = nn.Conv2d(2, 3, 1, bias=False)  # out 0 <- in 0 (rank 1), out 1 <- in 1 (rank 6), out 2 = 0
    _set(conv, weight=torch.tensor([[1.0, 0], [0, 1.0], [0, 0]]).view(3, 2, 1, 1))
    model = nn.Sequential(conv, nn.ReLU())
    s = pk.score(model, "hrank", data=[(x[:2], None), (x[2:], None)])["0.weight"]
    assert s.tolist() == pytest.approx([1.0, float(h), 0.0])


def test_hrank_of_a_linear_layer_is_the_fraction_of_nonzero_outputs():
    lin = nn.Linear(1, 2, bias=False)
    _set(lin, weight=torch.tensor([[1.0], [-1.0]]))
    x = torch.tensor([[1.0], [2.0], [-1.0], [0.0]])
    s = pk.score(nn.Sequential(lin, nn.ReLU()), "hrank", data=[(x, None)])["0.weight"]
    assert s.tolist() == pytest.approx([0.5, 0.25])


# --------------------------------------------------------------------------- BN scaling

def _random_gammas(model):
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            _set(m, weight=torch.randn(m.num_features))


def test_bn_scale_is_abs_gamma_of_the_following_bn_in_small_cnn():
    model = SmallCNN(widths=(4, 6, 8), hidden=8)
    _random_gammas(model)
    with pytest.raises(ValueError, match="classifier.2.weight"):
        pk.score(model, "bn_scale")
    s = pk.score(model, "bn_scale", exclude="classifier.*")
    for i in range(3):
        assert torch.equal(s[f"features.{4 * i}.weight"], model.features[4 * i + 1].weight.detach().abs())
    skip = pk.score(model, "bn_scale", missing="skip")
    assert set(skip) == {"features.0.weight", "features.4.weight", "features.8.weight"}
    # pk.prune then leaves the layers without BatchNorm alone, and the global count is exact
    masks = pk.prune(model, 0.5, criterion="bn_scale", granularity="channel", missing="skip")
    assert set(masks) == set(skip) and not hasattr(model.classifier[4], "weight_mask")
    removed = sum(int((~m.reshape(m.shape[0], -1).any(1)).sum()) for m in masks.values())
    assert removed == round(0.5 * (4 + 6 + 8))


def test_bn_scale_in_resnet_including_residual_blocks_and_shortcuts():
    model = ResNet(widths=(4, 8), blocks_per_stage=2)
    _random_gammas(model)
    s = pk.score(model, "bn_scale", exclude="fc.weight")
    assert torch.equal(s["conv1.weight"], model.bn1.weight.detach().abs())
    for stage in ("layer1", "layer2"):
        for b in ("0", "1"):
            block = getattr(model, stage)[int(b)]
            assert torch.equal(s[f"{stage}.{b}.conv1.weight"], block.bn1.weight.detach().abs())
            assert torch.equal(s[f"{stage}.{b}.conv2.weight"], block.bn2.weight.detach().abs())
    assert torch.equal(s["layer2.0.downsample.0.weight"], model.layer2[0].downsample[1].weight.detach().abs())


def test_bn_scale_without_batchnorm_is_an_error_naming_the_layer():
    with pytest.raises(ValueError, match="fc1.weight"):
        pk.score(MLP(8, (4,), 2), "bn_scale")
    with pytest.raises(ValueError, match="missing"):
        pk.score(SmallCNN(), "bn_scale", missing="zero")


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it; module order still finds the BN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.other = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.other(y) if y.sum() > 0 else self.other(-y)


def test_following_batchnorm_falls_back_to_module_order():
    model = Untraceable()
    bns = following_batchnorm(model, find_targets(model))
    assert bns == {"conv.weight": model.bn, "other.weight": None}

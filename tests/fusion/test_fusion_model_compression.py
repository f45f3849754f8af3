"""Deep Compression on a whole pruned CNN: per-layer sharing, trained centroids, the model's byte count."""

import pytest
import torch
import torch.nn.functional as F

import prunekit as pk
from prunekit.fusion import (centroid_step, compression_report, deep_compression_size, share_model_weights,
                             shared_to_dense)
from prunekit.models import SmallCNN


def pruned_cnn():
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, num_classes=10, widths=(8, 16), hidden=32).eval()
    pk.prune(net, 0.8)
    pk.remove_masks(net)
    return net


def test_share_model_weights_and_report():
    net = pruned_cnn()
    zeros = {n: (p == 0).clone() for n, p in net.named_parameters()}
    bits = {"features.0.weight": 8, "features.4.weight": 8, "classifier.2.weight": 5, "classifier.4.weight": 5}
    shared = share_model_weights(net, bits)
    assert list(shared) == list(bits)                                # every >= 2-D parameter, in order
    params = dict(net.named_parameters())
    for n, (codebook, idx) in shared.items():
        w = params[n].detach()
        assert torch.equal(w, shared_to_dense(codebook, idx))        # written back
        assert bool((w[zeros[n]] == 0).all()) and torch.equal(idx == -1, zeros[n])
        assert torch.unique(w[~zeros[n]]).numel() == min(2 ** bits[n], int((~zeros[n]).sum()))
    report = compression_report(net, shared, index_bits={n: 8 if n.startswith("features") else 5 for n in shared},
                                huffman=True)
    for n in shared:
        ib = 8 if n.startswith("features") else 5
        assert report.layers[n] == deep_compression_size(*shared[n], index_bits=ib, huffman=True)
    other = sum(p.numel() for n, p in net.named_parameters() if n not in shared) * 32
    assert report.other_bits == other
    assert report.total_bits == sum(r.total_bits for r in report.layers.values()) + other
    assert report.dense_total_bits == pk.count_params(net) * 32
    assert report.ratio == pytest.approx(report.dense_total_bits / report.total_bits) and report.ratio > 3
    assert sum(report.parts().values()) == report.total_bits


def test_centroid_fine_tuning_lowers_the_loss_and_keeps_the_sharing():
    net = pruned_cnn()
    shared = share_model_weights(net, 3)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    losses = []
    for _ in range(30):
        net.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        centroid_step(net, shared, lr=0.05)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for n, (codebook, idx) in shared.items():
        w = dict(net.named_parameters())[n].detach()
        assert torch.equal(w, shared_to_dense(codebook, idx))
        assert torch.unique(w[idx >= 0]).numel() <= 8 and bool((w[idx < 0] == 0).all())


def test_bad_input():
    net = SmallCNN(in_channels=1, num_classes=10, widths=(8, 16), hidden=32)
    pk.prune(net, 0.5)
    with pytest.raises(ValueError, match="remove_masks"):
        share_model_weights(net, 4)
    pk.remove_masks(net)
    with pytest.raises(ValueError, match="bits"):
        share_model_weights(net, {"features.0.weight": 4})
    with pytest.raises(ValueError, match="bits"):
        share_model_weights(net, 0)
    with pytest.raises(ValueError, match="names"):
        share_model_weights(net, 4, names=["nope"])
    with pytest.raises(TypeError, match="names"):
        share_model_weights(net, 4, names="features.0.weight")
    shared = share_model_weights(net, 4, names=["features.0.weight"])
    with pytest.raises(ValueError, match="index_bits"):
        compression_report(net, shared, index_bits={"classifier.2.weight": 5})
    with pytest.raises(ValueError, match="'nope'"):
        compression_report(net, {"nope": shared["features.0.weight"]})
    with pytest.raises(ValueError, match="shape"):
        compression_report(net, {"features.4.weight": shared["features.0.weight"]})
    with pytest.raises(TypeError, match="shared"):
        compression_report(net, [shared])

"""Quantization-aware training to int8: prepare, fine-tune with fake quantization, convert."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.ao.quantization import FakeQuantizeBase

import prunekit as pk
from prunekit.fusion import convert_int8, freeze_qat, prepare_qat_int8, quantize_int8, state_dict_bytes
from prunekit.models import SmallCNN

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def small_pruned_cnn(seed=0):
    torch.manual_seed(seed)
    net = SmallCNN(in_channels=1, num_classes=10, widths=(16, 32), hidden=32)
    net.train()
    with torch.no_grad():                  # non-trivial batch-norm statistics
        for _ in range(5):
            net(torch.randn(64, 1, 8, 8))
    net.eval()
    x = torch.randn(2, 1, 8, 8)
    pk.prune(net, 0.5, granularity="channel", scope="layer", exclude="classifier.4.weight")
    return pk.compact(net, x).eval()


def data(n=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()      # a learnable 4-class rule
    return x, y


def fine_tune(qat, steps=30):
    x, y = data()
    opt = torch.optim.Adam(qat.parameters(), lr=1e-3)
    qat.train()
    for i in range(steps):
        xb, yb = x[i % 4 * 64:(i % 4 + 1) * 64], y[i % 4 * 64:(i % 4 + 1) * 64]
        opt.zero_grad()
        F.cross_entropy(qat(xb), yb).backward()
        opt.step()
    return qat


def test_qat_model_fine_tunes_converts_and_matches_its_fake_quant_outputs():
    net = small_pruned_cnn()
    before = copy.deepcopy(net.state_dict())
    qat = prepare_qat_int8(net)
    assert qat.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())       # model untouched
    assert "ConvBnReLU2d" in {m._get_name() for m in qat.modules()}                 # BN folded in training
    assert any(isinstance(m, FakeQuantizeBase) for m in qat.modules())               # fake quantization
    x, y = data()
    loss0 = F.cross_entropy(qat(x), y).item()
    fine_tune(qat)
    freeze_qat(qat)
    qat.eval()
    with torch.no_grad():
        fake = qat(x)
    assert F.cross_entropy(fake, y).item() < loss0                                   # it trained through fake quant
    q = convert_int8(qat)
    assert {"QuantizedConvReLU2d", "QuantizedLinearReLU", "QuantizedLinear"} <= {m._get_name() for m in q.modules()}
    out = q(x)
    assert out.dtype == torch.float32 and out.shape == fake.shape
    err = (out - fake).abs().max() / fake.abs().max()
    assert err < 0.1, float(err)                  # a few quantization steps of the output
    assert (out.argmax(1) == fake.argmax(1)).float().mean() > 0.95
    assert state_dict_bytes(q) < state_dict_bytes(net)
    # the same size as post-training quantization of the same architecture
    assert state_dict_bytes(q) == state_dict_bytes(quantize_int8(net, x[:64]))
    # convert_int8 left the QAT model as it was
    with torch.no_grad():
        assert torch.equal(qat(x), fake)


def test_frozen_observers_do_not_move():
    qat = fine_tune(prepare_qat_int8(small_pruned_cnn()), steps=5)
    freeze_qat(qat)
    scales = [m.scale.clone() for m in qat.modules() if isinstance(m, FakeQuantizeBase)]
    fine_tune(qat, steps=3)
    after = [m.scale for m in qat.modules() if isinstance(m, FakeQuantizeBase)]
    assert scales and all(torch.equal(a, b) for a, b in zip(scales, after))


def test_explicit_and_no_fusion():
    net = small_pruned_cnn()
    x, _ = data(64)
    for fuse in (None, [["features.0", "features.1"]]):
        qat = prepare_qat_int8(net, fuse=fuse)
        qat.eval()
        with torch.no_grad():
            qat(x)                                     # observers see the data once
        freeze_qat(qat)
        q = convert_int8(qat)
        with torch.no_grad():
            ref = qat(x)
        assert (q(x) - ref).abs().max() / ref.abs().max() < 0.1


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(model="net"), TypeError, "model"),
    (dict(backend="tpu"), ValueError, "backend"),
    (dict(backend=3), TypeError, "backend"),
    (dict(fuse="all"), ValueError, "fuse"),
    (dict(fuse=[["nope"]]), ValueError, "fuse"),
    (dict(fuse=["features.0"]), TypeError, "fuse"),
])
def test_prepare_bad_input(kwargs, exc, word):
    args = dict(model=small_pruned_cnn())
    args.update(kwargs)
    engine = torch.backends.quantized.engine
    with pytest.raises(exc, match=word):
        prepare_qat_int8(args.pop("model"), **args)
    assert torch.backends.quantized.engine == engine


def test_masked_model_is_refused_and_untouched():
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, num_classes=10, widths=(16, 32), hidden=32).eval()
    pk.prune(net, 0.5, "magnitude")
    masks = {k: v.clone() for k, v in pk.get_masks(net).items()}
    with pytest.raises(ValueError, match="masks"):
        prepare_qat_int8(net)
    assert masks.keys() == pk.get_masks(net).keys()
    assert all(torch.equal(masks[k], v) for k, v in pk.get_masks(net).items())


def test_convert_and_freeze_bad_input():
    net = small_pruned_cnn()
    for f in (convert_int8, freeze_qat):
        with pytest.raises(TypeError, match="qat_model"):
            f("net")
        with pytest.raises(ValueError, match="qat_model"):
            f(net)                                       # a float model, not prepared
    qat = prepare_qat_int8(net)
    with pytest.raises(TypeError, match="observers"):
        freeze_qat(qat, observers="yes")
    with pytest.raises(ValueError, match="qat_model"):
        convert_int8(convert_int8(qat))                 # already converted

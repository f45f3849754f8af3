"""int8 post-training quantization: a pruned, compacted CNN runs in int8 and stays close to fp32."""


import pytest
import torch

import prunekit as pk
from prunekit.fusion import fusable_groups, quantize_int8, state_dict_bytes
from prunekit.models import SmallCNN

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def trained_like_cnn(seed=0):
    torch.manual_seed(seed)
    net = SmallCNN(in_channels=1, num_classes=10, widths=(16, 32), hidden=32)
    # give batch norm non-trivial statistics, as training would
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(64, 1, 8, 8))
    return net.eval()


def test_fusable_groups_of_the_cnn():
    net = trained_like_cnn()
    assert fusable_groups(net) == [["features.0", "features.1", "features.2"],
                                   ["features.4", "features.5", "features.6"],
                                   ["classifier.2", "classifier.3"]]


def test_pruned_compacted_cnn_int8_is_close_to_fp32():
    net = trained_like_cnn()
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    pk.prune(net, 0.5, granularity="channel", scope="layer", exclude="classifier.4.weight")
    small = pk.compact(net, x[:2]).eval()
    assert pk.count_params(small) < pk.count_params(trained_like_cnn())
    q = quantize_int8(small, [x[:128], x[128:]])
    ref = small(x)
    out = q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    kinds = {m._get_name() for m in q.modules()}
    assert {"QuantizedConvReLU2d", "QuantizedLinearReLU", "QuantizedLinear"} <= kinds      # really int8 kernels
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < 0.1, float(err)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.85
    assert state_dict_bytes(q) < state_dict_bytes(small)
    # the float model is untouched
    assert torch.equal(small(x), ref)


def test_unfused_and_explicit_fusion():
    net = trained_like_cnn()
    x = torch.randn(64, 1, 8, 8)
    for fuse in (None, [["features.0", "features.1"]]):
        q = quantize_int8(net, [(x, torch.zeros(64))], fuse=fuse)
        assert (q(x) - net(x)).abs().max() / net(x).abs().max() < 0.15


@pytest.mark.parametrize("kwargs,exc,word", [
    (dict(model="net"), TypeError, "model"),
    (dict(calibration=5), TypeError, "calibration"),
    (dict(calibration=[]), ValueError, "calibration"),
    (dict(calibration=[["a"]]), TypeError, "calibration"),
    (dict(backend="tpu"), ValueError, "backend"),
    (dict(fuse="all"), ValueError, "fuse"),
    (dict(fuse=[["nope"]]), ValueError, "fuse"),
    (dict(fuse=["features.0"]), TypeError, "fuse"),
])
def test_bad_input(kwargs, exc, word):
    args = dict(model=trained_like_cnn(), calibration=torch.randn(4, 1, 8, 8))
    args.update(kwargs)
    engine = torch.backends.quantized.engine
    with pytest.raises(exc, match=word):
        quantize_int8(args.pop("model"), args.pop("calibration"), **args)
    assert torch.backends.quantized.engine == engine

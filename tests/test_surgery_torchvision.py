"""compact() on torchvision classifiers with random weights: which ones it supports today.

Every model is built with ``weights=None`` under ``torch.manual_seed(0)``, put in eval
mode, given non-trivial BatchNorm statistics, and 40% of the output channels of every
Conv/Linear except the classifier are masked (``criterion="random"``, per layer). A
supported model must compact to a smaller model (parameters and MACs) that equals
``zero_removed_channels`` on the example input; an unsupported one must raise the
documented ``ValueError`` naming the construct and leave the model untouched. So this
file records exactly which models compact supports: a newly supported model makes its
``raises`` case fail, and must then move to ``SUPPORTED``.

Marked ``slow`` (about half a minute on two cores): deselect with ``-m "not slow"``.
"""

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.surgery import compact, zero_removed_channels

from helpers import assert_untouched, snapshot

pytestmark = pytest.mark.slow

SPARSITY = 0.4

#: model -> name of its final classifier layer (never pruned: the classes stay).
SUPPORTED = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vgg11_bn": "classifier.6",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "densenet121": "classifier",
    "squeezenet1_0": "classifier.1",  # a 1x1 conv producing the 1000 class maps
}

#: model -> (classifier, the construct named in the ValueError). The first construct the
#: removed channels reach is the one reported.
UNSUPPORTED = {
    "regnet_y_400mf": ("fc", "grouped convolution"),
    "shufflenet_v2_x1_0": ("fc", "channel shuffle"),
    "convnext_tiny": ("classifier.2", "'permute'.*an operation compact has no rule for"),
    # the patch embedding's channels reach a reshape to [N, C, H*W] before any attention
    "vit_b_16": ("heads.head", "'reshape'.*reshape other than"),
}

#: smallest convenient input; ViT-B/16 accepts only its image size.
INPUT_SIZE = {"vit_b_16": 224}


def randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine, so removed channels carry a BN shift."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model


def build(name: str, classifier: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = randomise_bn(getattr(torchvision.models, name)(weights=None).eval())
    assert isinstance(model.get_submodule(classifier), (nn.Linear, nn.Conv2d))
    pk.prune(model, SPARSITY, criterion="random", seed=0, granularity="channel", scope="layer",
             exclude=[f"{classifier}.weight"])  # parameter names, not module names
    assert not hasattr(model.get_submodule(classifier), "weight_mask")
    size = INPUT_SIZE.get(name, 64)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    return model, x


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_compact_supported(name):
    model, x = build(name, SUPPORTED[name])
    snap = snapshot(model)
    small = compact(model, x)
    assert_untouched(model, snap)
    assert type(small) is type(model)
    assert not torch_prune.is_pruned(small)
    with torch.no_grad():
        out = small(x)
        ref = zero_removed_channels(model, x)(x)
    assert out.shape == ref.shape == (1, 1000)
    scale = max(1.0, float(ref.abs().max()))
    assert float((out - ref).abs().max()) <= 1e-4 * scale
    p_dense, p_small = pk.count_params(model), pk.count_params(small)
    m_dense, m_small = pk.count_macs(model, x)[0], pk.count_macs(small, x)[0]
    assert p_small < p_dense
    assert m_small < m_dense
    print(f"{name}: params {p_dense:,} -> {p_small:,} ({1 - p_small / p_dense:.1%} fewer), "
          f"MACs {m_dense:,} -> {m_small:,} ({m_dense / m_small:.2f}x fewer)")


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_compact_unsupported_raises(name):
    classifier, construct = UNSUPPORTED[name]
    model, x = build(name, classifier)
    snap = snapshot(model)
    with pytest.raises(ValueError, match=construct):
        compact(model, x)
    assert_untouched(model, snap)
    with pytest.raises(ValueError, match=construct):
        zero_removed_channels(model, x)
    assert_untouched(model, snap)

"""compact() on torchvision classifiers with random weights: which ones it supports today.

Every model is built with ``weights=None`` under ``torch.manual_seed(0)``, put in eval
mode, given non-trivial BatchNorm statistics, and 40% of the output channels of every
Conv/Linear except the classifier are masked (``criterion="random"``, per layer). A
supported model must compact to a smaller model (parameters and MACs) that equals
``zero_removed_channels`` on the example input; an unsupported one must raise the
documented ``ValueError`` naming the construct and leave the model untouched. So this
file records exactly which models compact supports: a newly supported model makes its
``raises`` case fail, and must then move to ``SUPPORTED``.

``test_same_budget_as_torch_pruning`` compares with Torch-Pruning (``torch-pruning``,
a test-only requirement; skipped when it is not installed) on resnet18 and mobilenet_v2.

Marked ``slow`` (about 40 s on two cores): deselect with ``-m "not slow"``.
"""

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.surgery import compact, plan_channels, zero_removed_channels

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
    scale = float(ref.abs().max())
    assert scale > 1e-3  # randomised BatchNorm: outputs far from zero, the comparison means something
    assert float((out - ref).abs().max()) <= 1e-4 * scale  # relative: outputs range from ~1e-2 to ~1
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


# --- cross-check against Torch-Pruning (Fang et al., CVPR 2023), a test-only dependency ---

TP_MODELS = {"resnet18": "fc", "mobilenet_v2": "classifier.1"}


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {n: tuple(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}


def torch_pruning_half(model: nn.Module, x: torch.Tensor, classifier: str) -> tuple[nn.Module, dict]:
    """Torch-Pruning at pruning_ratio=0.5 per group (local); returns the pruned copy and, per
    Conv/Linear, the output channels Torch-Pruning removed from it."""
    tp = pytest.importorskip("torch_pruning")
    model = copy.deepcopy(model)
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=0.5, global_pruning=False,
                                       ignored_layers=[model.get_submodule(classifier)])
    names = {m: n for n, m in model.named_modules()}
    removed = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            module = dep.target.module
            if isinstance(module, (nn.Conv2d, nn.Linear)) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                removed[names[module]] = [int(i) for i in tp._helpers.to_plain_idxs(idxs)]
        group.prune()
    return model, removed


@pytest.mark.parametrize("name", list(TP_MODELS))
def test_same_budget_as_torch_pruning(name):
    """50% of the channels per layer, with Torch-Pruning and with prunekit.

    Torch-Pruning removes the same index set from all the layers of a coupled group (a
    residual stage: the convs adding into it, their BatchNorms, the consumers), 50% of
    the group. prunekit masks 50% of every conv on its own, and compact keeps the union
    of the channels the producers of a residual group keep, so it removes fewer there:
    the layers outside residual groups get the same widths, those in residual groups
    are wider, and the total is larger. Given Torch-Pruning's own channel sets as masks,
    compact builds exactly Torch-Pruning's architecture and outputs.
    """
    classifier = TP_MODELS[name]
    torch.manual_seed(0)
    model = randomise_bn(getattr(torchvision.models, name)(weights=None).eval())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    theirs, removed = torch_pruning_half(model, x, classifier)

    ours = copy.deepcopy(model)
    pk.prune(ours, 0.5, criterion="magnitude", granularity="channel", scope="layer",
             exclude=[f"{classifier}.weight"])
    plan = plan_channels(ours, x)
    ours = compact(ours, x)
    residual = {p: len(g["kept"]) for g in plan.groups if len(g["producers"]) > 1 for p in g["producers"]}
    assert residual  # both models have residual groups
    t_shapes, o_shapes = _shapes(theirs), _shapes(ours)
    assert t_shapes.keys() == o_shapes.keys()
    convs = [n for n, m in theirs.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for n in convs:
        if n == classifier:
            assert t_shapes[n][0] == o_shapes[n][0] == 1000
        elif n in residual:  # Torch-Pruning: half of the group; prunekit: the union kept
            assert t_shapes[n][0] == model.get_submodule(n).weight.shape[0] // 2
            assert o_shapes[n][0] == residual[n] > t_shapes[n][0]
        else:  # the same rounding: round(0.5 * C) = C - int(0.5 * C) for even C
            assert t_shapes[n][0] == o_shapes[n][0], n
    p_dense, p_theirs, p_ours = pk.count_params(model), pk.count_params(theirs), pk.count_params(ours)
    assert p_theirs < p_ours < p_dense

    # Torch-Pruning's channel sets as prunekit masks: the same architecture and outputs
    same = copy.deepcopy(model)
    masks = {}
    for n, idx in removed.items():
        mask = torch.ones_like(same.get_submodule(n).weight, dtype=torch.bool)
        mask[idx] = False
        masks[f"{n}.weight"] = mask
    pk.apply_masks(same, masks)
    same = compact(same, x)
    assert _shapes(same) == t_shapes
    assert pk.count_params(same) == p_theirs
    with torch.no_grad():
        a, b = same(x), theirs(x)
    assert float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))
    print(f"{name}: dense {p_dense:,}, Torch-Pruning {p_theirs:,}, prunekit {p_ours:,}, "
          f"prunekit with Torch-Pruning's channels {pk.count_params(same):,}")

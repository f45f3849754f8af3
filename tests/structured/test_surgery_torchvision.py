"""compact() on torchvision classifiers with random weights: which ones it supports today.

Every model is built with ``weights=None`` under ``torch.manual_seed(0)``, put in eval
mode, given non-trivial BatchNorm statistics, and 40% of the output channels of its
prunable Conv/Linear layers are masked (``criterion="random"``, per layer). A supported
model must compact to a smaller model (parameters and MACs) that equals
``zero_removed_channels`` on the example input, with the exact widths the masks ask
for, and leave the model untouched. Channels that reach a construct compact cannot follow
(attention) are kept, with a warning naming it (``test_vit_patch_embedding_channels_are_kept_at_attention``).

``SUPPORTED`` names, per model, the parameters that are pruned: every Conv/Linear
weight but the classifier's, or a pattern (ConvNeXt's and ViT's MLP hidden channels, whose
exact widths are checked). ``EVERY_LAYER`` masks every Conv/Linear weight of ConvNeXt and ViT
(LayerNorm'd streams: LayerNorms are group members) and expects no error.
``test_default_coupled_path_compacts_convnext_and_vit`` runs the default coupled path and
compares the parameter fraction with Torch-Pruning's.

``test_same_budget_as_torch_pruning`` compares with Torch-Pruning (``torch-pruning``,
a test-only requirement; skipped when it is not installed) on resnet18 and mobilenet_v2,
and ``test_convnext_mlp_hidden_channels_same_as_torch_pruning`` on ConvNeXt's MLPs
(``tests/test_groups.py`` does regnet_y_400mf).

Marked ``slow`` (about a minute on two cores): deselect with ``-m "not slow"``.
"""

import copy
import re
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune as torch_prune

import prunekit as pk
from prunekit.core.graph.channels import plan_channels
from prunekit.structured.compact import compact, zero_removed_channels

from helpers import assert_untouched, snapshot

pytestmark = pytest.mark.slow

SPARSITY = 0.4

#: model -> (name of its final classifier layer (never pruned: the classes stay),
#: None = every other Conv/Linear weight is pruned, or a regex of the pruned parameter names).
SUPPORTED = {
    "resnet18": ("fc", None),
    "resnet50": ("fc", None),
    "vgg11_bn": ("classifier.6", None),
    "mobilenet_v2": ("classifier.1", None),
    "mobilenet_v3_small": ("classifier.3", None),
    "efficientnet_b0": ("classifier.1", None),
    "densenet121": ("classifier", None),
    "squeezenet1_0": ("classifier.1", None),  # a 1x1 conv producing the 1000 class maps
    "regnet_y_400mf": ("fc", None),  # grouped convs (group width 8) and squeeze-and-excitation
    # the residual stream is LayerNorm'd: the 4x MLP expansions (Linear C -> 4C) are pruned
    "convnext_tiny": ("classifier.2", r"features\.\d+\.\d+\.block\.3\.weight"),
    "vit_b_16": ("heads.head", r"encoder\.layers\.encoder_layer_\d+\.mlp\.0\.weight"),
    # chunk, concatenation and channel shuffle: channels tracked through the permutation
    "shufflenet_v2_x1_0": ("fc", None),
}

#: models whose every Conv/Linear weight but the classifier's is masked per layer: compact keeps
#: what cannot be removed exactly (ViT's stream reaches attention) with a warning naming it.
EVERY_LAYER = {
    "convnext_tiny": ("classifier.2", None),
    # conv_proj is reshaped with the constant hidden_dim: its masked channels stay, reported; the
    # stream after it has 12 voting producers, which never all drop a channel here
    "vit_b_16": ("heads.head", r"\['conv_proj'\].*constant"),
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


def build(name: str, classifier: str, pattern: str | None = None) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = randomise_bn(getattr(torchvision.models, name)(weights=None).eval())
    head = model.get_submodule(classifier)
    assert isinstance(head, (nn.Linear, nn.Conv2d))
    if not head.weight.any():  # ViT initialises its head to zeros: the outputs would all be 0
        with torch.no_grad():
            head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(3))
    if pattern is None:
        pk.prune(model, SPARSITY, criterion="random", seed=0, granularity="channel", scope="layer",
                 exclude=[f"{classifier}.weight"])  # parameter names, not module names
    else:
        include = [n for n, _ in model.named_parameters() if re.fullmatch(pattern, n)]
        assert include and f"{classifier}.weight" not in include
        pk.prune(model, SPARSITY, criterion="random", seed=0, granularity="channel", scope="layer",
                 include=include)
    assert not hasattr(model.get_submodule(classifier), "weight_mask")
    size = INPUT_SIZE.get(name, 64)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    return model, x


def kept_rows(module: nn.Module) -> torch.Tensor:
    m = module.weight_mask
    return m.reshape(m.shape[0], -1).any(dim=1)


def check_widths(name: str, model: nn.Module, small: nn.Module) -> int:
    """The exact widths of the layers whose channels the model-specific rules decide;
    returns how many layers were checked."""
    checked = 0
    for n, m in model.named_modules():
        if name == "regnet_y_400mf" and isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels:
            # a grouped conv keeps its group count; each group keeps the most any of its groups
            # keeps (rows: its own mask; inputs: the mask of the 1x1 conv ``a`` feeding it)
            s, a = small.get_submodule(n), model.get_submodule(n.replace(".b.0", ".a.0"))
            g = m.groups
            per_out = int(kept_rows(m).view(g, -1).sum(1).max())
            per_in = int(kept_rows(a).view(g, -1).sum(1).max())
            assert (s.groups, s.out_channels, s.in_channels) == (g, g * per_out, g * per_in), n
            assert s.weight.shape == (g * per_out, per_in, 3, 3)
            assert small.get_submodule(n.replace(".b.0", ".se.fc2")).out_channels == g * per_out
            checked += 1
        if name in ("convnext_tiny", "vit_b_16") and isinstance(m, nn.Linear) and hasattr(m, "weight_mask"):
            k = int(kept_rows(m).sum())
            second = n.replace("block.3", "block.5").replace("mlp.0", "mlp.3")
            assert small.get_submodule(n).out_features == small.get_submodule(second).in_features == k, n
            assert k < m.out_features
            checked += 1
        if name == "shufflenet_v2_x1_0" and n.endswith("branch2.0"):
            k = int(kept_rows(m).sum())
            assert small.get_submodule(n).out_channels == small.get_submodule(n[:-1] + "5").in_channels == k
            assert small.get_submodule(n[:-1] + "3").groups == k  # the depthwise conv follows
            checked += 1
    return checked


@pytest.mark.parametrize("name", list(SUPPORTED))
def test_compact_supported(name):
    model, x = build(name, *SUPPORTED[name])
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
    expected_checks = {"regnet_y_400mf": 16, "convnext_tiny": 18, "vit_b_16": 12, "shufflenet_v2_x1_0": 16}
    assert check_widths(name, model, small) == expected_checks.get(name, 0)
    print(f"{name}: params {p_dense:,} -> {p_small:,} ({1 - p_small / p_dense:.1%} fewer), "
          f"MACs {m_dense:,} -> {m_small:,} ({m_dense / m_small:.2f}x fewer)")


@pytest.mark.parametrize("name", list(EVERY_LAYER))
def test_per_layer_masks_on_every_layer_compact(name):
    """Per-layer masks everywhere (not coupled): never an error. ConvNeXt's LayerNorm'd stream
    loses the channels all its producers drop; ViT's patch embedding is reshaped with a constant,
    so its masked channels stay (zero rows), with a warning naming it."""
    classifier, construct = EVERY_LAYER[name]
    model, x = build(name, classifier)
    snap = snapshot(model)
    if construct is None:
        small = compact(model, x)
    else:
        with pytest.warns(UserWarning, match=construct):
            small = compact(model, x)
    assert_untouched(model, snap)
    with torch.no_grad():
        out, ref = small(x), zero_removed_channels(model, x)(x)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    assert pk.count_params(small) < pk.count_params(model)


def test_vit_patch_embedding_channels_are_kept_at_attention():
    """ViT's patch embedding (``conv_proj``) is reshaped with the constant ``hidden_dim``
    (``x.reshape(n, self.hidden_dim, n_h * n_w)``), which would not shrink: a barrier, so its
    channels are kept, with a warning. The residual stream after it holds the class token and
    the position embedding (members), is LayerNorm'd (members) and reaches attention (a
    barrier). The MLP hidden channels compact. A small ``VisionTransformer`` (torchvision's
    class, the same graph as vit_b_16) keeps this fast."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                 hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    stream = next(g for g in plan_channels(model, x).groups if "encoder.layers.encoder_layer_0.mlp.3" in g["producers"])
    assert set(stream["producers"]) == {f"encoder.layers.encoder_layer_{i}.mlp.3" for i in (0, 1)}
    embed = next(g for g in plan_channels(model, x).groups if g["producers"] == ["conv_proj"])
    assert embed["fixed"] and "constant" in embed["barriers"][0]
    assert set(stream["consumers"]) == {f"encoder.layers.encoder_layer_{i}.mlp.0" for i in (0, 1)} | {"heads.head"}
    assert {"class_token", "encoder.pos_embedding"} <= set(stream["params"])
    assert stream["fixed"] and any("attention" in b for b in stream["barriers"])
    masked = copy.deepcopy(model)
    pk.prune(masked, 0.25, criterion="random", seed=0, granularity="channel", scope="layer",
             include=["encoder.layers.encoder_layer_0.mlp.0.weight"])
    stream_producers = ["conv_proj"] + [f"encoder.layers.encoder_layer_{i}.mlp.3" for i in (0, 1)]
    masks = {}
    for n in stream_producers:  # every producer of the stream drops channels 0..7
        m = torch.ones_like(masked.get_submodule(n).weight, dtype=torch.bool)
        m[:8] = False
        masks[f"{n}.weight"] = m
    pk.apply_masks(masked, masks)
    snap = snapshot(masked)
    with pytest.warns(UserWarning, match=r"\['conv_proj'\].*reshape.*constant"):
        small = compact(masked, x)
    assert_untouched(masked, snap)
    assert small.conv_proj.out_channels == 32 and small.encoder.layers[0].mlp[0].out_features == 48

    pk.prune(model, 0.25, criterion="random", seed=0, granularity="channel", scope="layer",
             include=["encoder.layers.encoder_layer_0.mlp.0.weight", "encoder.layers.encoder_layer_1.mlp.0.weight"])
    small = compact(model, x)
    assert [small.encoder.layers[i].mlp[0].out_features for i in (0, 1)] == [48, 48]
    assert [small.encoder.layers[i].mlp[3].in_features for i in (0, 1)] == [48, 48]
    assert small.conv_proj.out_channels == 32 and small.encoder.ln.normalized_shape == (32,)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_removed_channels(model, x)(x), rtol=1e-4, atol=1e-5)


#: the default coupled path, 40% of every group's channels, against Torch-Pruning 1.6.1's
#: parameter fraction kept on the same setting (MagnitudeImportance(p=1), pruning_ratio=0.4,
#: classifier ignored; /work/notes/tp-report.md): 0.369 and 0.738.
DEFAULT_PATH = {"convnext_tiny": ("classifier.2", 64, 0.369), "vit_b_16": ("heads.head", 224, 0.738)}


@pytest.mark.parametrize("name", list(DEFAULT_PATH))
def test_default_coupled_path_compacts_convnext_and_vit(name):
    """``pk.prune(..., granularity="channel", example_inputs=x)`` then ``pk.compact``: no error, no
    warning, compacted == masked reference, and Torch-Pruning's parameter fraction within 0.01."""
    classifier, size, tp_kept = DEFAULT_PATH[name]
    torch.manual_seed(0)
    model = randomise_bn(getattr(torchvision.models, name)(weights=None).eval())
    head = model.get_submodule(classifier)
    if not head.weight.any():
        with torch.no_grad():
            head.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(3))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    dense = pk.count_params(model)
    pk.prune(model, 0.4, criterion="magnitude", granularity="channel", scope="layer", reduction="l1",
             example_inputs=x, exclude=[f"{classifier}.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = compact(model, x)
    with torch.no_grad():
        out, ref = small(x), zero_removed_channels(model, x)(x)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    kept = pk.count_params(small) / dense
    assert abs(kept - tp_kept) < 0.01, kept
    if name == "convnext_tiny":  # the stream is pruned: 96 -> 58 channels in stage 1, LayerNorms too
        assert small.features[0][0].out_channels == small.features[1][0].block[2].normalized_shape[0] == 58


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


def test_convnext_mlp_hidden_channels_same_as_torch_pruning():
    """ConvNeXt's MLP hidden channels (Linear on channels-last tensors), 50% per block with
    Torch-Pruning (every other layer ignored) and with ``prune_groups`` on the MLP expansions:
    the same widths, parameter count and outputs."""
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    theirs = copy.deepcopy(model)
    hidden = [m for n, m in theirs.named_modules() if n.endswith("block.3")]
    ignored = [m for m in theirs.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in hidden]
    with pytest.warns(UserWarning, match="layer_scale"):  # Torch-Pruning notes the layer-scale parameters
        pruner = tp.pruner.MagnitudePruner(theirs, x, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=0.5, global_pruning=False, ignored_layers=ignored)
    pruner.step()
    ours = copy.deepcopy(model)
    pk.structured.groups.prune_groups(ours, 0.5, x, include=[f"{n}.weight" for n, _ in ours.named_modules()
                                                  if n.endswith("block.3")])
    ours = compact(ours, x)
    shapes = lambda m: {n: tuple(mod.weight.shape) for n, mod in m.named_modules()  # noqa: E731
                        if isinstance(mod, (nn.Conv2d, nn.Linear, nn.LayerNorm))}
    assert shapes(ours) == shapes(theirs)
    assert ours.features[1][0].block[3].out_features == 192  # 384 hidden channels, half kept
    assert pk.count_params(ours) == pk.count_params(theirs) < 0.6 * pk.count_params(model)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max())

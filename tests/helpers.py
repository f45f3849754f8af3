"""Small models shared by the unit tests."""

import torch
from torch import nn


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
    )


def snapshot(model: nn.Module) -> dict:
    """Everything an erroneous call must leave untouched: tensors, names and hooks."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [n for n, _ in model.named_parameters()],
        "hooks": [len(m._forward_pre_hooks) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["params"] == snap["params"]
    assert now["hooks"] == snap["hooks"]
    assert now["state"].keys() == snap["state"].keys()
    for k in snap["state"]:
        assert torch.equal(now["state"][k], snap["state"][k]), k


def randomise_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine, so removed channels carry a BN shift."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


def flaky_cross_entropy(fail_at: int = 2):
    """A cross-entropy loss that raises ``RuntimeError("boom")`` on its ``fail_at``-th call
    (a user's loss_fn failing part-way through a criterion); ``.calls`` counts the calls."""
    import torch.nn.functional as F

    def loss(out, y):
        loss.calls += 1
        if loss.calls == fail_at:
            raise RuntimeError("boom")
        return F.cross_entropy(out, y)

    loss.calls = 0
    return loss

"""Small models and checks shared by the unit tests."""

import torch
from torch import nn

import prunekit as pk
from prunekit.structured.compact import compact, zero_removed_channels


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


# ------------------------------------------------------------------- channel surgery

def mask_rows(model: nn.Module, name: str, rows: list[int]) -> nn.Module:
    w = dict(model.named_parameters())[name]
    m = torch.ones_like(w, dtype=torch.bool)
    m[rows] = False
    pk.apply_masks(model, {name: m})
    return model


def check_compact(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Compact; the model is untouched, smaller, and equal to the reference on a fresh batch."""
    snap = snapshot(model)
    small = compact(model, x[:1])
    assert_untouched(model, snap)
    assert pk.count_params(small) < pk.count_params(model)
    with torch.no_grad():
        torch.testing.assert_close(small(x), zero_removed_channels(model, x[:1])(x), rtol=1e-4, atol=1e-5)
    return small


# ------------------------------------------------------------------- language models

class Residual(nn.Module):
    """x + mlp(x): the residual inside the block, as in Hugging Face decoder layers (the driver
    feeds each block's output to the next)."""

    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))

    def forward(self, x):
        return x + self.mlp(x)


class PlainLM(nn.Module):
    """Not Hugging Face: embedding, a ModuleList of residual MLP blocks, a head."""

    def __init__(self, vocab=20, d=16, n_blocks=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Residual(d) for _ in range(n_blocks))
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.embed(ids)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def tiny_llama(*, layers: int = 2, kv: int = 4, bias: bool = False, seed: int = 0) -> nn.Module:
    """A random Hugging Face LlamaForCausalLM (hidden 32, MLP 64, 4 heads, vocab 64), eval mode."""
    import transformers
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                      num_attention_heads=4, num_key_value_heads=kv, vocab_size=64,
                                      max_position_embeddings=64, attention_bias=bias, mlp_bias=bias)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def token_ids(n: int, seq: int, seed: int = 1) -> torch.Tensor:
    """``[n, seq]`` random token ids below 64 (the tiny LLaMA's vocabulary)."""
    return torch.randint(0, 64, (n, seq), generator=torch.Generator().manual_seed(seed))

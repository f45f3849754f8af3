"""A small LoRA of our own, for recovering a pruned LM (``peft`` is not a dependency).

Hu et al. 2022, *LoRA: Low-rank adaptation of large language models* (ICLR 2022): a frozen
``nn.Linear`` ``W`` gets a trainable low-rank update, ``y = W x + b + (α / r) · B A x`` with
``A ∈ R^{r×in}``, ``B ∈ R^{out×r}``; ``A`` is initialised at random (Kaiming-uniform with
``a = √5``, as ``nn.Linear`` and ``peft`` do) and ``B`` at zero, so the adapted model starts
exactly equal to the base model. After training, :func:`merge_lora` folds ``(α / r) · B A`` into
``W`` and puts plain ``nn.Linear`` layers back. LLM-Pruner's recovery (Ma et al. 2023) uses
``r = 8, α = 16`` on every projection (q/k/v/o, gate/up/down), dropout 0.05: the defaults here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real

import torch
from torch import nn

from .._validate import check_int, check_model

__all__ = ["LoRALinear", "add_lora", "merge_lora", "lora_parameters", "TARGETS"]

#: LLM-Pruner's LoRA targets: every projection of a LLaMA block.
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · lora_B(lora_A(dropout(x)))``, with ``base`` a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **kw))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **kw))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (code that reads ``.weight``, e.g. shapes or dtypes, keeps working)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta(self) -> torch.Tensor:
        """The weight update ``(alpha / r) · B A``, shaped like the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets: Iterable[str] = TARGETS, *,
             dropout: float = 0.05) -> list[str]:
    """Wrap every ``nn.Linear`` of ``model`` whose attribute name is in ``targets`` in a :class:`LoRALinear`, in place.

    Every parameter of ``model`` is frozen (``requires_grad=False``) except the new ``lora_A`` and
    ``lora_B``; the model's outputs are unchanged until they are trained (``B = 0``).

    Args:
        model: any module (e.g. a pruned ``LlamaForCausalLM``).
        r: the rank, ``>= 1`` (at most ``min(in, out)`` of each target is sensible, not required).
        alpha: the scale numerator, ``> 0``; the update is multiplied by ``alpha / r``.
        targets: the last component of the module names to adapt (``"q_proj"`` matches
            ``model.layers.3.self_attn.q_proj``); default :data:`TARGETS`.
        dropout: dropout on the LoRA branch's input during training, in ``[0, 1)``.

    Returns:
        The names of the wrapped layers; ``ValueError`` if none matches (and nothing is changed).
    """
    check_model(model)
    r = check_int("r", r, minimum=1)
    if not isinstance(alpha, Real) or isinstance(alpha, bool) or not float(alpha) > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    if not isinstance(dropout, Real) or isinstance(dropout, bool) or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise TypeError(f"targets must be a non-empty sequence of module names, got {targets!r}")
    chosen = [(name, mod) for name, mod in model.named_modules()
              if type(mod) is nn.Linear and name.rpartition(".")[2] in targets]
    if any(isinstance(mod, LoRALinear) for mod in model.modules()):
        raise ValueError("model already has LoRA layers: merge_lora(model) first")
    if not chosen:
        raise ValueError(f"no nn.Linear of model is named one of {list(targets)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name, lin in chosen:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, LoRALinear(lin, r, float(alpha), float(dropout)))
    return [name for name, _ in chosen]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``lora_A`` and ``lora_B`` parameters of every :class:`LoRALinear` in ``model``."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


@torch.no_grad()
def merge_lora(model: nn.Module, *, requires_grad: bool = True) -> list[str]:
    """Fold every :class:`LoRALinear` of ``model`` into its base ``nn.Linear`` (``W += (α/r) B A``)
    and put the plain layer back, in place; the outputs are unchanged (up to float rounding).

    ``requires_grad`` is set on every parameter of the merged model (``add_lora`` froze them).
    Returns the names of the merged layers.
    """
    check_model(model)
    wrapped = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, LoRALinear)]
    for name, mod in wrapped:
        base = mod.base
        base.weight += mod.delta().to(base.weight.dtype)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, base)
    for p in model.parameters():
        p.requires_grad_(bool(requires_grad))
    return [name for name, _ in wrapped]

"""Run-time (dynamic) pruning: what is skipped depends on the input.

* :mod:`.gating` -- feature boosting and suppression (FBS, Gao et al. 2019): a small predictor
  keeps the top-k channels of a convolution per input; :func:`executed_macs` counts what each
  input really costs;
* :mod:`.tokens` -- EViT token pruning (Liang et al. 2022): after chosen blocks of a ViT only the
  patch tokens the class token attends to most are kept, the rest fused into one.
"""

from .gating import ChannelGate, executed_macs, gate_model, gated_channels, saliency_l1
from .tokens import EViTBlock, evit, evit_macs, kept_tokens

__all__ = ["ChannelGate", "gate_model", "executed_macs", "saliency_l1", "gated_channels",
           "EViTBlock", "evit", "evit_macs", "kept_tokens"]

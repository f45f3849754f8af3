"""Pruning language models (chapter 7): one-shot, layer-wise pruning from calibration data.

* :mod:`.layerwise` -- one ``nn.Linear`` at a time: :func:`magnitude_prune_layer`,
  :func:`wanda_prune_layer` (Sun et al. 2024), :func:`sparsegpt_prune_layer` (Frantar &
  Alistarh 2023).
* :mod:`.sequential` -- :func:`prune_sequential`, the block-by-block driver of the references.
* :mod:`.owl` -- :func:`outlier_ratios` and :func:`owl_sparsities`, OWL's non-uniform block
  sparsity (Yin et al. 2024).
* :mod:`.perplexity` -- :func:`perplexity`, sliding windows as in Hugging Face's guide.
* :mod:`.width` -- :func:`llm_pruner`, LLM-Pruner's coupled head / MLP-channel groups ranked by
  first-order Taylor importance and removed physically (Ma et al. 2023);
* :mod:`.depth` -- :func:`block_influence` and :func:`drop_blocks`, ShortGPT's depth pruning
  (Men et al. 2024);
* :mod:`.lora` -- :func:`add_lora` / :func:`merge_lora`, a small LoRA for recovery (Hu et al. 2022).
* :mod:`.tinylm` -- the book's tiny LLaMA, its corpus (Python's pydoc topics) and tokenizer
  (the zoo's ``"tinylm"``).

Nothing here imports ``transformers``: the functions work on any PyTorch model, and on Hugging
Face causal LMs (``pip install prunekit[llm]``) unchanged.
"""

from . import depth, layerwise, lora, tinylm, width
from .depth import block_influence, drop_blocks, least_influential
from .lora import LoRALinear, add_lora, lora_parameters, merge_lora
from .layerwise import magnitude_prune_layer, sparsegpt_prune_layer, wanda_prune_layer
from .owl import outlier_ratios, owl_sparsities
from .perplexity import perplexity
from .sequential import find_blocks, prune_sequential
from .width import block_parts, llm_pruner, prune_attention_groups, prune_mlp_channels, taylor_importance

__all__ = ["layerwise", "tinylm", "magnitude_prune_layer", "wanda_prune_layer", "sparsegpt_prune_layer", "perplexity",
           "prune_sequential", "find_blocks",
           "outlier_ratios", "owl_sparsities", "depth", "width", "lora", "block_influence", "drop_blocks",
           "least_influential", "llm_pruner", "taylor_importance", "prune_attention_groups", "prune_mlp_channels",
           "block_parts", "add_lora", "merge_lora", "lora_parameters", "LoRALinear"]

"""Pruning language models (chapter 7): one-shot, layer-wise pruning from calibration data.

* :mod:`.layerwise` -- one ``nn.Linear`` at a time: :func:`magnitude_prune_layer`,
  :func:`wanda_prune_layer` (Sun et al. 2024), :func:`sparsegpt_prune_layer` (Frantar &
  Alistarh 2023).
* :mod:`.sequential` -- :func:`prune_sequential`, the block-by-block driver of the references.
* :mod:`.owl` -- :func:`outlier_ratios` and :func:`owl_sparsities`, OWL's non-uniform block
  sparsity (Yin et al. 2024).
* :mod:`.perplexity` -- :func:`perplexity`, sliding windows as in Hugging Face's guide.
* :mod:`.tinylm` -- the book's tiny LLaMA, its corpus (Python's pydoc topics) and tokenizer
  (the zoo's ``"tinylm"``).

Nothing here imports ``transformers``: the functions work on any PyTorch model, and on Hugging
Face causal LMs (``pip install prunekit[llm]``) unchanged.
"""

from . import layerwise, tinylm
from .layerwise import magnitude_prune_layer, sparsegpt_prune_layer, wanda_prune_layer
from .owl import outlier_ratios, owl_sparsities
from .perplexity import perplexity
from .sequential import find_blocks, prune_sequential

__all__ = ["layerwise", "tinylm", "magnitude_prune_layer", "wanda_prune_layer", "sparsegpt_prune_layer", "perplexity",
           "prune_sequential", "find_blocks",
           "outlier_ratios", "owl_sparsities"]

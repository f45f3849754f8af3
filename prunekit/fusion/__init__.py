"""Pruning fused with other compression (chapter 5).

* :mod:`.distillation` -- :func:`kd_loss`, Hinton et al. (2015)'s distillation loss, for
  fine-tuning a pruned student with its dense teacher.
* :mod:`.quantization` -- Deep Compression (Han et al. 2016): :func:`share_weights` (k-means
  weight sharing), :func:`centroid_step` (shared-value fine-tuning),
  :func:`huffman_code_lengths`, and :func:`deep_compression_size` (relative-index byte
  accounting).
* :mod:`.lowrank` -- :func:`low_rank`, truncated-SVD factorisation of an ``nn.Linear``.
"""

from .distillation import kd_loss
from .lowrank import low_rank, low_rank_params
from .quantization import (CompressedSize, centroid_gradients, centroid_step, deep_compression_size,
                           huffman_code_lengths, relative_indices, share_weights, shared_to_dense)

__all__ = ["kd_loss", "huffman_code_lengths", "share_weights", "shared_to_dense", "centroid_gradients",
           "centroid_step", "relative_indices", "deep_compression_size", "CompressedSize", "low_rank", "low_rank_params"]

"""Pruning fused with other compression (chapter 5).

* :mod:`.distillation` -- :func:`kd_loss`, Hinton et al. (2015)'s distillation loss, for
  fine-tuning a pruned student with its dense teacher.
* :mod:`.quantization` -- Deep Compression (Han et al. 2016): :func:`share_weights` (k-means
  weight sharing), :func:`centroid_step` (shared-value fine-tuning),
  :func:`huffman_code_lengths`, :func:`deep_compression_size` (relative-index byte
  accounting), and for whole models :func:`share_model_weights` and :func:`compression_report`.
* :mod:`.lowrank` -- :func:`low_rank`, truncated-SVD factorisation of an ``nn.Linear``;
  :func:`tucker2`, Tucker-2 factorisation of an ``nn.Conv2d`` (Kim et al. 2016);
  :func:`low_rank_plus_sparse`, LoSparse's low-rank + sparse start (Li et al. 2023);
  :func:`rank_for_budget` for comparisons with pruning at equal parameter count.
* :mod:`.int8` -- :func:`quantize_int8`, real int8 CPU inference by static post-training
  quantization (``torch.ao.quantization`` eager mode; why that path: see the module).
* :mod:`.qat` -- quantization-aware training to int8 (Jacob et al. 2018):
  :func:`prepare_qat_int8` (fake quantization in the forward pass), :func:`freeze_qat`,
  :func:`convert_int8`.
* :mod:`.nas` -- :func:`eagleeye_search` and :func:`adaptive_bn`, EagleEye's width search
  (Li et al. 2020) on the search space of AMC and MetaPruning.
"""

from .distillation import kd_loss
from .int8 import fusable_groups, quantize_int8, state_dict_bytes
from .nas import adaptive_bn, eagleeye_search
from .qat import convert_int8, freeze_qat, prepare_qat_int8
from .lowrank import LowRankPlusSparse, low_rank, low_rank_params, low_rank_plus_sparse, rank_for_budget, tucker2
from .quantization import (CompressedSize, CompressionReport, centroid_gradients, centroid_step, compression_report,
                           deep_compression_size, huffman_code_lengths, relative_indices, share_model_weights,
                           share_weights, shared_to_dense)

__all__ = ["kd_loss", "huffman_code_lengths", "share_weights", "shared_to_dense", "centroid_gradients",
           "centroid_step", "relative_indices", "deep_compression_size", "CompressedSize",
           "share_model_weights", "compression_report", "CompressionReport", "low_rank", "low_rank_params", "tucker2",
           "rank_for_budget", "low_rank_plus_sparse", "LowRankPlusSparse",
           "quantize_int8", "fusable_groups", "state_dict_bytes", "adaptive_bn", "eagleeye_search",
           "prepare_qat_int8", "freeze_qat", "convert_int8"]

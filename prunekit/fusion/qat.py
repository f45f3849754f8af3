"""Quantization-aware training (QAT) to int8: fine-tune with the quantizer in the loop.

:func:`~prunekit.fusion.quantize_int8` quantizes a trained float model after the fact
(post-training quantization, PTQ). Quantization-aware training instead fine-tunes a copy whose
forward pass *simulates* int8: every weight and activation goes through a fake quantizer that
rounds it to the grid it will have in int8 and returns floats again, so the loss sees the
rounding error. Rounding has zero gradient almost everywhere; the backward pass uses the
straight-through estimator (the gradient of the rounding is taken as 1 inside the clipping
range, 0 outside), so the float "shadow" weights keep learning and settle where their rounded
values work well. This is the training scheme of Jacob et al., "Quantization and training of
neural networks for efficient integer-arithmetic-only inference", CVPR 2018 (section 3:
simulated quantization in training, batch norm folded into the convolution's weights), as
implemented by PyTorch's eager mode (``torch.ao.quantization.prepare_qat``/``convert``; why this
deprecated path: see :mod:`prunekit.fusion.int8`).

The three steps, with the conventions of :func:`~prunekit.fusion.quantize_int8` (same fusion,
same wrapper, the backend's default QAT qconfig: per-channel symmetric int8 weights, uint8
activations from moving-average min/max observers)::

    qat = prepare_qat_int8(model)            # a copy in train mode, fake quantization on
    train.fine_tune(qat, loader, steps=300)  # any training loop
    freeze_qat(qat)                          # optional, for the last steps: fix ranges, BN statistics
    q = convert_int8(qat)                    # real int8 kernels, float in, float out

Pruning: prune and compact first (structured channel pruning, :func:`prunekit.compact`):
the compacted model has no masks, so nothing can regrow during QAT. A model that still has
masks is refused (``ValueError``); fold them with :func:`prunekit.remove_masks` (zeros may then
regrow in fine-tuning) or compact it.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from .._validate import check_bool, check_model
from ..core.masks import get_masks
from .int8 import _check_backend, _fuse_groups

__all__ = ["prepare_qat_int8", "freeze_qat", "convert_int8"]

_BACKEND_ATTR = "_prunekit_qat_backend"


def prepare_qat_int8(model: nn.Module, *, backend: str = "x86",
                     fuse: Sequence[Sequence[str]] | str | None = "auto") -> nn.Module:
    """A copy of ``model`` ready for quantization-aware training (fake int8 in the forward pass).

    Steps: copy ``model`` in train mode; fuse conv/linear + batch norm + ReLU runs for QAT
    (``fuse``, as :func:`~prunekit.fusion.quantize_int8`; a fused conv + batch norm keeps
    training its batch norm and folds it into the weights before fake-quantizing them, as in
    Jacob et al. 2018); wrap it as ``QuantStub -> model -> DeQuantStub``; attach the backend's
    default QAT qconfig; ``prepare_qat``. ``model`` is not modified.

    Fine-tune the result with any training loop (it is an ordinary ``nn.Module`` whose
    parameters are the float weights), then :func:`convert_int8` it. The observers keep
    updating the quantization ranges in *every* forward pass, eval mode included; call
    :func:`freeze_qat` before evaluating it if the ranges must not move.

    The converted model computes what the fake-quantized one does up to a few quantization
    steps of the output (rounding order, batch norm folded into int8 weights). One more
    difference: with ``"x86"``/``"fbgemm"`` the activations are fake-quantized to 7 bits
    (0..127, PyTorch's ``reduce_range``, as in :func:`~prunekit.fusion.quantize_int8`'s
    calibration) while the int8 kernels output 0..255 at the same scale, so an activation
    that saturates in training is clipped later after conversion.

    Args:
        model: the float model, without pruning masks (compact or ``remove_masks`` first).
        backend: the quantized engine (``"x86"``, ``"fbgemm"``, ``"qnnpack"``: one of
            ``torch.backends.quantized.supported_engines``); made the process-wide engine.
        fuse: ``"auto"`` (:func:`~prunekit.fusion.fusable_groups`), ``None`` or a list of
            name lists.

    Returns:
        The prepared model (a ``torch.ao.quantization.QuantWrapper``) in train mode.

    Raises:
        TypeError / ValueError naming the argument; checked before anything is copied.
    """
    from torch.ao import quantization as tq

    check_model(model)
    be = _check_backend(backend)
    groups = _fuse_groups(model, fuse)
    masked = list(get_masks(model))
    if masked:
        raise ValueError(f"model has pruning masks on {masked[:3]}: compact it (prunekit.compact) or fold the "
                         f"masks (prunekit.remove_masks) before quantization-aware training")
    float_model = copy.deepcopy(model).train()
    if groups:
        float_model = tq.fuse_modules_qat(float_model, groups)
    wrapped = tq.QuantWrapper(float_model).train()
    torch.backends.quantized.engine = be
    wrapped.qconfig = tq.get_default_qat_qconfig(be)
    prepared = tq.prepare_qat(wrapped)
    setattr(prepared, _BACKEND_ATTR, be)
    return prepared


def _check_prepared(qat_model: Any, arg: str = "qat_model") -> None:
    from torch.ao.quantization import FakeQuantizeBase

    check_model(qat_model, arg)
    if not isinstance(getattr(qat_model, _BACKEND_ATTR, None), str) or not any(
            isinstance(m, FakeQuantizeBase) for m in qat_model.modules()):
        raise ValueError(f"{arg} must be a model returned by prepare_qat_int8 (with fake quantizers), "
                         f"got a {type(qat_model).__name__} without them")


def freeze_qat(qat_model: nn.Module, *, observers: bool = True, bn_stats: bool = True) -> nn.Module:
    """Fix what QAT still estimates from the data, in place; return ``qat_model``.

    ``observers``: stop updating the quantization ranges (scales and zero points stay; fake
    quantization stays on). ``bn_stats``: the fused conv + batch norm modules stop updating
    their running mean and variance and train with them (their affine parameters still
    learn). Freezing both for the last part of fine-tuning lets the weights adapt to the final
    grid, as PyTorch's QAT recipe does.
    """
    from torch.ao.nn.intrinsic import qat as nniqat
    from torch.ao.quantization import disable_observer

    _check_prepared(qat_model)
    check_bool("observers", observers)
    check_bool("bn_stats", bn_stats)
    if observers:
        qat_model.apply(disable_observer)
    if bn_stats:
        qat_model.apply(nniqat.freeze_bn_stats)
    return qat_model


def convert_int8(qat_model: nn.Module) -> nn.Module:
    """The int8 model of a fine-tuned :func:`prepare_qat_int8` model (``qat_model`` unchanged).

    Converts a copy in eval mode: weights are rounded to int8 with the scales the fake
    quantizers hold, batch norm is folded, and every fused run becomes one quantized kernel
    (the same modules :func:`~prunekit.fusion.quantize_int8` gives). The backend chosen at
    preparation is made the process-wide quantized engine again.

    Returns:
        The quantized model (a ``QuantWrapper``), in eval mode: float in, float out.
    """
    from torch.ao import quantization as tq

    _check_prepared(qat_model)
    torch.backends.quantized.engine = getattr(qat_model, _BACKEND_ATTR)
    return tq.convert(copy.deepcopy(qat_model).eval()).eval()

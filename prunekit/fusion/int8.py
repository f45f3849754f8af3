"""Real int8 inference on CPU for a pruned, compacted CNN: static post-training quantization.

Why this path. In torch 2.14, PyTorch's own quantization (``torch.ao.quantization``) is
deprecated in favour of ``torchao`` (pytorch/ao issue 2259; the PT2E flow has already moved
there and ``torch.ao.quantization.quantize_pt2e`` no longer exists in torch), but its *eager
mode* (``prepare``/``convert`` with ``QuantStub``) still ships, runs on this x86 CPU with the
``x86``/``fbgemm`` kernels, and needs no extra package. ``torchao`` is the maintained successor
(its int8 CPU paths go through ``torch.compile`` or PT2E); it is not a dependency of prunekit.
Eager mode emits a ``DeprecationWarning``, which :func:`quantize_int8` lets through: when
torch removes it, this module is the one place to port.

The recipe is the one of Jacob et al., "Quantization and training of neural networks for
efficient integer-arithmetic-only inference", CVPR 2018 (per-channel int8 weights, uint8
activations with scales from calibration batches), as implemented by PyTorch's eager mode.
"""

from __future__ import annotations

import copy
import io
from typing import Any, Sequence

import torch
from torch import nn

from .._validate import check_choice, check_model
from ._inputs import input_batches

__all__ = ["quantize_int8", "fusable_groups", "state_dict_bytes"]

# consecutive children of an nn.Sequential that eager mode can fuse into one quantized kernel
_PATTERNS: tuple[tuple[type, ...], ...] = (
    (nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
    (nn.Conv1d, nn.BatchNorm1d, nn.ReLU), (nn.Conv1d, nn.BatchNorm1d), (nn.Conv1d, nn.ReLU),
    (nn.Linear, nn.BatchNorm1d), (nn.Linear, nn.ReLU),
)


def fusable_groups(model: nn.Module) -> list[list[str]]:
    """Names of module runs that :func:`quantize_int8` fuses (conv + batch norm + ReLU, ...).

    Only runs of *consecutive children of an* ``nn.Sequential`` are found, because there the
    order of the children is the order of execution; modules called from a custom ``forward``
    (a ResNet's ``conv1``/``bn1``/``relu``) are left unfused, which is correct but slower.
    Fusing folds batch norm into the convolution, as inference does anyway.
    """
    check_model(model)
    groups: list[list[str]] = []
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        i = 0
        while i < len(names):
            for pattern in _PATTERNS:
                run = names[i:i + len(pattern)]
                if len(run) == len(pattern) and all(type(mod._modules[n]) is t for n, t in zip(run, pattern)):
                    groups.append([f"{prefix}.{n}" if prefix else n for n in run])
                    i += len(pattern)
                    break
            else:
                i += 1
    return groups


def quantize_int8(model: nn.Module, calibration: Any, *, backend: str = "x86",
                  fuse: Sequence[Sequence[str]] | str | None = "auto") -> nn.Module:
    """An int8 copy of ``model`` for CPU inference (static post-training quantization, eager mode).

    Steps: copy ``model`` in eval mode; fuse conv/linear + batch norm + ReLU runs (``fuse``);
    wrap it as ``QuantStub -> model -> DeQuantStub`` (float in, float out); attach the backend's
    default qconfig (per-channel symmetric int8 weights, uint8 activations from a histogram
    observer); run the ``calibration`` batches; convert. ``model`` is not modified.

    Pruning first and then compacting (:func:`prunekit.compact`) gives smaller dense layers,
    which is what int8 kernels speed up; zeros left in a masked weight are quantized like any
    value (zero is exact in the symmetric weight scheme) but save no time.

    Limits of eager mode: the model's ``forward`` may only use modules and functions that accept
    quantized tensors (``Conv``, ``Linear``, ``ReLU``, pooling, ``Flatten``, ``view``); an ``x + y``
    between activations (residual connections) needs ``torch.ao.nn.quantized.FloatFunctional``
    and fails here with PyTorch's error.

    Args:
        model: the float model.
        calibration: a tensor of inputs, or an iterable of batches (tensors or
            ``(inputs, targets)`` pairs, e.g. a ``DataLoader``); a few hundred samples suffice.
        backend: the quantized engine, one of ``torch.backends.quantized.supported_engines``
            (``"x86"`` or ``"fbgemm"`` on x86 CPUs, ``"qnnpack"`` on ARM). It is made the
            process-wide engine (``torch.backends.quantized.engine``), which the quantized
            model needs when it runs.
        fuse: ``"auto"`` (:func:`fusable_groups`), ``None`` (no fusion) or a list of name lists.

    Returns:
        The quantized model (a ``torch.ao.quantization.QuantWrapper``), in eval mode.
    """
    from torch.ao import quantization as tq

    check_model(model)
    be = _check_backend(backend)
    groups = _fuse_groups(model, fuse)
    batches = input_batches("calibration", calibration)

    float_model = copy.deepcopy(model).eval()
    if groups:
        float_model = tq.fuse_modules(float_model, groups)
    wrapped = tq.QuantWrapper(float_model).eval()
    torch.backends.quantized.engine = be
    wrapped.qconfig = tq.get_default_qconfig(be)
    prepared = tq.prepare(wrapped)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return tq.convert(prepared).eval()


def _fuse_groups(model: nn.Module, fuse: Any) -> list[list[str]]:
    """The module runs to fuse for ``fuse`` (``"auto"``, ``None`` or a list of name lists),
    checked against ``model``; shared by :func:`quantize_int8` and :mod:`.qat`."""
    if isinstance(fuse, str):
        check_choice("fuse", fuse, ("auto",))
        return fusable_groups(model)
    if fuse is None:
        return []
    if not isinstance(fuse, Sequence) or not all(
            isinstance(g, Sequence) and not isinstance(g, str) and all(isinstance(n, str) for n in g) for g in fuse):
        raise TypeError("fuse must be 'auto', None or a list of lists of module names")
    known = dict(model.named_modules())
    missing = [n for g in fuse for n in g if n not in known]
    if missing:
        raise ValueError(f"fuse names modules that model does not have: {missing[:5]}")
    return [list(g) for g in fuse]


def _check_backend(backend: Any) -> str:
    """``backend`` if it is one of this build's quantized engines (``"x86"``, ``"fbgemm"``, ...)."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    return check_choice("backend", backend, engines)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the size of a model on disk (float or quantized)."""
    check_model(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes

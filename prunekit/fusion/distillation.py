"""Knowledge distillation: the dense model teaches its pruned version (Hinton et al. 2015).

Hinton, Vinyals & Dean, "Distilling the knowledge in a neural network", NeurIPS Deep Learning
Workshop 2015 (arXiv:1503.02531): the student matches the teacher's softened distribution
``softmax(z / T)`` and the true labels; the soft term is multiplied by ``T**2`` so that its
gradient keeps the same magnitude when the temperature changes (their section 2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .._validate import check_number

__all__ = ["kd_loss"]


def _logits(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of logits with shape (batch, classes), "
                        f"got {type(value).__name__}")
    if value.dim() != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must have shape (batch, classes) with batch >= 1 and classes >= 1, "
                         f"got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float) -> torch.Tensor:
    """The distillation loss of Hinton et al. (2015), averaged over the batch.

    ``alpha * T**2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, targets)``,
    where the KL divergence is summed over classes and both terms are means over the batch
    (``F.kl_div(..., reduction="batchmean")`` and ``F.cross_entropy``). ``alpha = 0`` is plain
    cross-entropy; ``alpha = 1`` is pure distillation. The teacher is fixed: its logits are
    detached, so no gradient flows into the teacher.

    Args:
        student_logits: ``(batch, classes)`` floating-point logits of the pruned model.
        teacher_logits: the teacher's logits, same shape.
        targets: ``(batch,)`` integer class labels in ``[0, classes)``.
        temperature: ``T > 0``; larger values soften both distributions.
        alpha: weight of the soft term, in ``[0, 1]``.

    Returns:
        A scalar tensor (differentiable in ``student_logits``).
    """
    s = _logits("student_logits", student_logits)
    t = _logits("teacher_logits", teacher_logits)
    if t.shape != s.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits {tuple(s.shape)}, "
                         f"got {tuple(t.shape)}")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices, got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor of class indices, got dtype {targets.dtype}")
    if targets.shape != (s.shape[0],):
        raise ValueError(f"targets must have shape ({s.shape[0]},) (one class index per row of student_logits), "
                         f"got {tuple(targets.shape)}")
    if bool(((targets < 0) | (targets >= s.shape[1])).any()):
        raise ValueError(f"targets must be class indices in [0, {s.shape[1]}), got values "
                         f"{int(targets.min())}..{int(targets.max())}")
    T = check_number("temperature", temperature, low=0.0, low_open=True, what="a finite number > 0")
    a = check_number("alpha", alpha, low=0.0, high=1.0)

    t = t.detach().to(s.dtype)
    soft = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1), reduction="batchmean",
                    log_target=True)
    hard = F.cross_entropy(s, targets.long())
    return a * T * T * soft + (1.0 - a) * hard

"""Training losses: ``(model, x, y) -> (loss, logits)``. Cross-entropy with label smoothing is the
default; knowledge distillation (Hinton et al. 2015) serves both ``edgeloop train --teacher`` and
the compression recipes' distilled fine-tuning."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812  (torch's own convention)

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def default_loss(label_smoothing: float) -> LossFn:
    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing), logits

    return loss_fn


def distill_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0) -> LossFn:
    """Match the teacher's temperature-softened logits:
    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_logits = teacher(x).float()
        logits = model(x)
        s = logits.float()
        kd = (
            F.kl_div(
                F.log_softmax(s / temperature, 1),
                F.log_softmax(t_logits / temperature, 1),
                reduction="batchmean",
                log_target=True,
            )
            * temperature**2
        )
        ce = F.cross_entropy(s, y, label_smoothing=label_smoothing)
        return alpha * kd + (1 - alpha) * ce, logits

    return loss_fn

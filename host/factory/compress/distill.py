"""Knowledge distillation (Hinton et al. 2015): match the teacher's temperature-softened logits."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from host.factory.train import LossFn


def distill_loss(teacher: nn.Module, temperature: float, alpha: float, label_smoothing: float = 0.0) -> LossFn:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)."""
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

"""AdaBN (Li et al. 2016): re-estimate every BatchNorm layer's statistics on field images, nothing else.

It is the baseline ``edgeloop adapt`` has to beat: cheap, label-free, and it corrects what a shift
does to the activations' mean and variance, but not what it does to the features themselves (noise,
blur and JPEG remove information that no re-normalisation brings back).

``weight`` below 1 keeps part of the model's own statistics: each layer then normalises with those of a
mixture, that share of field images and the rest of the data the model was trained on (mean and
variance of the mixture, the gap between the two means included). A small field sample, or one that
mixes day and night, estimates the field's statistics poorly; the training statistics are the prior.
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from host.factory.predict import to_input
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing


@torch.no_grad()
def adabn(
    model: nn.Module, images: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 200, weight: float = 1.0
) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are those of ``images`` (averages over
    every batch of ``batch`` images: momentum None), in eval mode; every weight stays as it was.
    ``weight`` < 1: the statistics of a mixture, that share of ``images`` and the rest the model's own."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise EdgeloopError("AdaBN needs BatchNorm layers; this model has none (folded already?)")
    if len(images) < 2:
        raise EdgeloopError("AdaBN needs at least two field images")
    if not 0 < weight <= 1:
        raise EdgeloopError(f"AdaBN weight {weight} must be in (0, 1]: the field images' share of the statistics")
    out = copy.deepcopy(model)
    out.eval()
    for m in out.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over every batch
            m.train()
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        if len(chunk) > 1:  # a batch of one has no variance
            out(to_input(torch.from_numpy(chunk), prep))
    if weight < 1:
        own = dict(model.named_modules())
        for name, m in out.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                _mix(m, own[name], weight)
    return out.eval()


def _statistics(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = getattr(bn, "running_mean", None), getattr(bn, "running_var", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor):
        raise EdgeloopError("AdaBN with a weight needs BatchNorm layers that keep running statistics")
    return mean, var


def _mix(field: nn.Module, own: nn.Module, w: float) -> None:
    """``field``'s statistics become those of the mixture: share ``w`` of its own, 1 - w of ``own``'s."""
    (mean_f, var_f), (mean_o, var_o) = _statistics(field), _statistics(own)
    gap = (mean_f - mean_o) ** 2
    var_f.copy_(w * var_f + (1 - w) * var_o + w * (1 - w) * gap)
    mean_f.copy_(w * mean_f + (1 - w) * mean_o)

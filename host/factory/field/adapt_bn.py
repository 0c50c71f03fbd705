"""AdaBN (Li et al. 2016): re-estimate every BatchNorm layer's statistics on field images, nothing else.

It is the baseline ``edgeloop adapt`` has to beat: cheap, label-free, and it corrects what a shift
does to the activations' mean and variance, but not what it does to the features themselves (noise,
blur and JPEG remove information that no re-normalisation brings back).
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
def adabn(model: nn.Module, images: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 200) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are those of ``images`` (exact averages
    over all of them: momentum None), in eval mode; every weight stays as it was."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise EdgeloopError("AdaBN needs BatchNorm layers; this model has none (folded already?)")
    if len(images) < 2:
        raise EdgeloopError("AdaBN needs at least two field images")
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
    return out.eval()

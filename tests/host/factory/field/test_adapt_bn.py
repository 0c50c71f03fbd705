"""AdaBN with a weight: the BatchNorm statistics of a mixture of the field images and the model's own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from host.factory import checkpoint
from host.factory.field.adapt_bn import adabn
from shared import datasets
from shared.errors import EdgeloopError


def _stats(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        name: (m.running_mean.clone(), m.running_var.clone())
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None
    }


def test_a_weight_mixes_the_field_statistics_with_the_models_own(zoo_checkpoint: Path, golden_dir: Path) -> None:
    ck = checkpoint.load(zoo_checkpoint)
    model = ck.build()
    dark = (datasets.load_labelled(golden_dir).images[:64] // 3).astype(np.uint8)
    own, field = _stats(model), _stats(adabn(model, dark, ck.preprocessing, batch=64))
    mixed_model = adabn(model, dark, ck.preprocessing, batch=64, weight=0.25)
    mixed = _stats(mixed_model)
    assert own and set(mixed) == set(own)
    for name, (mean, var) in mixed.items():
        (m_o, v_o), (m_f, v_f) = own[name], field[name]
        assert torch.allclose(mean, 0.25 * m_f + 0.75 * m_o, atol=1e-5)
        # the variance of the mixture: both variances and the spread between the two means
        assert torch.allclose(var, 0.25 * v_f + 0.75 * v_o + 0.25 * 0.75 * (m_f - m_o) ** 2, atol=1e-5)
    assert not mixed_model.training
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, mixed_model.state_dict()[k])}
    assert all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)
    # weight 1 is AdaBN as published
    full = _stats(adabn(model, dark, ck.preprocessing, batch=64, weight=1.0))
    assert all(torch.equal(full[n][0], field[n][0]) and torch.equal(full[n][1], field[n][1]) for n in field)


@pytest.mark.parametrize("weight", [0.0, -0.1, 1.5])
def test_a_weight_outside_zero_to_one_is_refused(zoo_checkpoint: Path, golden_dir: Path, weight: float) -> None:
    ck = checkpoint.load(zoo_checkpoint)
    images = datasets.load_labelled(golden_dir).images[:8]
    with pytest.raises(EdgeloopError, match="must be in"):
        adabn(ck.build(), images, ck.preprocessing, weight=weight)

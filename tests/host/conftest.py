from __future__ import annotations

from pathlib import Path

import pytest
import torch

from host.factory import checkpoint, models
from shared.datasets import CIFAR10_CLASSES
from shared.imaging import Preprocessing


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained ResNet-20 checkpoint with non-trivial BN statistics (fast; no accuracy needed)."""
    torch.manual_seed(0)
    model = models.build("resnet20")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            mean, var = m.running_mean, m.running_var
            assert mean is not None and var is not None  # BatchNorm2d tracks running stats by default
            mean.uniform_(-0.1, 0.1)
            var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    checkpoint.save(checkpoint.from_model(model, "resnet20", CIFAR10_CLASSES, Preprocessing(), {"top1": 0.1}), path)
    return path

"""Memory layout of a model's weights: channels-last for fast CPU training, contiguous elsewhere."""

from __future__ import annotations

import torch
from torch import nn


def channels_last(model: nn.Module) -> nn.Module:
    """NHWC weights: oneDNN's fast path for convolutions on x86 (in place; returns the model)."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs omit it


def contiguous(model: nn.Module) -> nn.Module:
    """Default NCHW layout, which pruning and export expect (in place; returns the model)."""
    return model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]

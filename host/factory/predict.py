"""PyTorch-side inference: uint8 images -> model input, logits for a whole set, top-1.

Training (validation after each epoch), export (the parity check), evaluation and compression
all measure a torch model the same way, so they share these three functions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from shared import imaging
from shared.imaging import Preprocessing


def to_input(images_u8: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW (channels-last memory), same constants as shared.imaging."""
    scale, shift = imaging.affine(prep)
    x = images_u8.float() * torch.from_numpy(scale) - torch.from_numpy(shift)
    return x.permute(0, 3, 1, 2)


@torch.no_grad()
def predict_torch(
    model: nn.Module, images_u8: npt.NDArray[np.uint8], prep: Preprocessing, batch_size: int = 500
) -> npt.NDArray[np.float32]:
    """Logits for every image, eval mode, FP32."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images_u8), batch_size):
            x = to_input(torch.from_numpy(images_u8[i : i + batch_size]), prep)
            out.append(model(x).float().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def top1(logits: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> float:
    if len(labels) == 0:
        return 0.0
    return float((logits.argmax(1) == labels).mean())

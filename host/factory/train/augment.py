"""Training-time augmentation, done per batch in torch on images held in memory."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch


class CropFlip:
    """Random 32x32 crop of a 4-pixel zero-padded image plus horizontal flip, done per batch in torch."""

    def __init__(self, images: npt.NDArray[np.uint8], pad: int = 4, cutout: int = 0,
                 fill: tuple[int, int, int] = (125, 123, 114)) -> None:  # fmt: skip
        self.pad = pad
        self.cutout = cutout
        self.fill = torch.tensor(fill, dtype=torch.uint8)
        self.size = images.shape[1]
        self.padded = torch.from_numpy(np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0))))

    def __call__(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = idx.shape[0]
        oy = torch.randint(0, 2 * self.pad + 1, (b,), generator=gen)
        ox = torch.randint(0, 2 * self.pad + 1, (b,), generator=gen)
        ar = torch.arange(self.size)
        rows = (oy[:, None] + ar)[:, :, None]
        cols = (ox[:, None] + ar)[:, None, :]
        flip = torch.rand(b, generator=gen) < 0.5
        cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
        out: torch.Tensor = self.padded[idx[:, None, None], rows, cols]
        if self.cutout:
            # Cutout (DeVries & Taylor 2017): blank a random square (centre may sit near the edge)
            # with the dataset's mean colour, which normalises to about zero
            cy = torch.randint(0, self.size, (b,), generator=gen)
            cx = torch.randint(0, self.size, (b,), generator=gen)
            half = self.cutout // 2
            ys = (ar[None, :] >= (cy - half)[:, None]) & (ar[None, :] < (cy + half)[:, None])
            xs = (ar[None, :] >= (cx - half)[:, None]) & (ar[None, :] < (cx + half)[:, None])
            mask = ys[:, :, None] & xs[:, None, :]
            out = torch.where(mask[..., None], self.fill, out)
        return out

"""The statistics a field's degradation is read from, on RGB uint8 images (numpy + OpenCV).

* colour: per-channel mean, standard deviation and quantiles of the pixel values (a cast moves the
  channels apart, exposure and haze bend all three the same way);
* detail: how much the luminance changes from pixel to pixel at three scales (blur removes the
  finest first; noise adds to the finest only), the same in flat areas (the median and lower
  quartile of the steps: what JPEG leaves of noise is faint ripples there), a noise figure that
  edges barely move (the median of Immerkaer's second-difference filter), the chroma detail (4:2:0
  JPEG removes it; sensor noise adds it), JPEG blockiness (steps at the 8-pixel block edges
  against steps elsewhere) and the JPEG "ghost" curve (Farid 2009: how much re-compressing at
  quality q changes the image; it stays small for every q at or above the quality the image was
  last compressed at).

Each is averaged over the images, so a folder of samples and a degraded copy of the clean set can
be compared however many images each has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from host.factory.field import degrade

QUANTILES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
GHOST_QUALITIES = (30, 50, 70, 90)
DETAIL_NAMES = (
    "grad1", "grad2", "grad4", "median1", "flat1", "median2", "noise", "chroma1", "chroma2", "blockiness",
    *(f"ghost{q}" for q in GHOST_QUALITIES),
)  # fmt: skip
# Immerkaer (1996): the difference of two Laplacians cancels smooth structure, not noise
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Stats:
    """What a set of images looks like: colour and detail, averaged over its images."""

    n_images: int
    mean: F32  # per channel (R, G, B), 0-255
    std: F32  # per channel
    quantiles: F32  # 3 x len(QUANTILES)
    detail: F32  # len(DETAIL_NAMES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images,
            "mean_rgb": [round(float(v), 2) for v in self.mean],
            "std_rgb": [round(float(v), 2) for v in self.std],
            "detail": {k: round(float(v), 4) for k, v in zip(DETAIL_NAMES, self.detail, strict=True)},
        }


def _mean_abs_steps(y: F32) -> float:
    """Mean |step| between neighbours, across and down, over N x H x W."""
    return float(0.5 * (np.abs(np.diff(y, axis=2)).mean() + np.abs(np.diff(y, axis=1)).mean()))


def _step_quantiles(y: F32, qs: tuple[float, ...]) -> list[float]:
    """Per-image quantiles of |step| (across and down), averaged over images: the low ones are the
    flat areas, where noise that JPEG left as faint ripples shows and edges do not."""
    n = y.shape[0]
    steps = np.concatenate([np.abs(np.diff(y, axis=2)).reshape(n, -1), np.abs(np.diff(y, axis=1)).reshape(n, -1)], 1)
    return [float(v) for v in np.quantile(steps, qs, axis=1).mean(axis=1)]


def _pool(y: F32, k: int) -> F32:
    n, h, w = y.shape
    out: F32 = y[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k).mean(axis=(2, 4))
    return out


def _noise_figure(y: F32) -> float:
    """Per-image median of |Immerkaer filter| (scaled to a Gaussian sigma), averaged over images."""
    n, h, w = y.shape
    conv = np.zeros((n, h - 2, w - 2), dtype=np.float32)
    for i in range(3):
        for j in range(3):
            conv += _IMMERKAER[i, j] * y[:, i : h - 2 + i, j : w - 2 + j]
    meds = np.median(np.abs(conv).reshape(n, -1), axis=1)
    return float(meds.mean()) * float(np.sqrt(np.pi / 2) / 6.0)


def _blockiness(y: F32, block: int = 8) -> float:
    """Mean step across 8-pixel block edges over the mean step elsewhere (1: no blocks)."""
    dx = np.abs(np.diff(y, axis=2))
    dy = np.abs(np.diff(y, axis=1))
    edge = np.zeros(dx.shape[2], dtype=bool)
    edge[block - 1 :: block] = True
    at = 0.5 * (dx[:, :, edge].mean() + dy[:, edge[: dy.shape[1]], :].mean())
    off = 0.5 * (dx[:, :, ~edge].mean() + dy[:, ~edge[: dy.shape[1]], :].mean())
    return float(at / max(off, 1e-6))


def mosaic(images: npt.NDArray[np.uint8], cols: int = 16) -> npt.NDArray[np.uint8]:
    """Tile N x S x S x 3 images into one picture (S a multiple of 16: JPEG's 4:2:0 blocks stay
    inside a tile), so that one JPEG call compresses them all; missing tiles are black."""
    n, s = images.shape[0], images.shape[1]
    rows = -(-n // cols)
    tiles = np.zeros((rows * cols, *images.shape[1:]), dtype=np.uint8)
    tiles[:n] = images
    out: npt.NDArray[np.uint8] = (
        tiles.reshape(rows, cols, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * s, cols * s, 3)
    )
    return out


def _ghost(images: npt.NDArray[np.uint8], quality: int) -> float:
    """Mean |image - image re-compressed at ``quality``|, compressed as one mosaic (6x faster than
    one call per image; the decoder's chroma smoothing crosses tile edges, which shifts the figure a
    little, the same for every set measured)."""
    n, s = images.shape[0], images.shape[1]
    tiled = mosaic(images)
    diff = np.abs(degrade.jpeg(tiled, quality).astype(np.float32) - tiled)
    rows, cols = diff.shape[0] // s, diff.shape[1] // s
    per_tile = diff.reshape(rows, s, cols, s, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cols, -1)
    return float(per_tile[:n].mean())


def detail(images: npt.NDArray[np.uint8]) -> F32:
    """The detail features (``DETAIL_NAMES``) of N x H x W x 3 uint8 images."""
    x = images.astype(np.float32)
    y = x @ _LUMA
    chroma = np.stack([x[..., 0] - x[..., 1], x[..., 2] - x[..., 1]])  # 2 x N x H x W
    values = [
        _mean_abs_steps(y),
        _mean_abs_steps(_pool(y, 2)),
        _mean_abs_steps(_pool(y, 4)),
        *_step_quantiles(y, (0.5, 0.25)),
        _step_quantiles(_pool(y, 2), (0.5,))[0],
        _noise_figure(y),
        float(np.mean([_mean_abs_steps(c) for c in chroma])),
        float(np.mean([_mean_abs_steps(_pool(c, 2)) for c in chroma])),
        _blockiness(y),
        *(_ghost(images, q) for q in GHOST_QUALITIES),
    ]
    return np.asarray(values, dtype=np.float32)


def colour(images: npt.NDArray[np.uint8]) -> tuple[F32, F32, F32]:
    """Per-channel mean, std and ``QUANTILES`` of all the pixels."""
    px = images.reshape(-1, 3).astype(np.float32)
    q = np.quantile(px, QUANTILES, axis=0).T.astype(np.float32)
    return px.mean(axis=0), px.std(axis=0), q


def measure(images: npt.NDArray[np.uint8]) -> Stats:
    mean, std, q = colour(images)
    return Stats(len(images), mean, std, q, detail(images))

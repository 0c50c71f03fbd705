"""Drift statistics: the one definition the host (reference, at release time) and the device (what it
serves) both compute, so that the two can be compared.

Per image the statistics are: the mean of each RGB channel (pixels in [0, 1]), its detail (the mean
absolute Laplacian of its grey levels, in [0, 1]: sensor noise raises it, blur lowers it), the
model's confidence (max softmax) and its predicted class. A set of images is summarised by the mean
and spread of the channel means and of the detail, a histogram of the confidences over fixed bins,
and the predicted-class histogram.

The drift score compares a window of served images with the reference. It has four parts, each
divided by the level at which it alone should raise an alarm:

* PSI of the confidence histogram (population stability index; 0.25 is the usual "significant
  shift" level): a model that suddenly hesitates, or is sure where it was not, sees other data;
* PSI of the predicted-class histogram (0.25): the scene mix or the model's reading of it moved;
* the standardised shift of the channel means, |mean_window - mean_ref| / std_ref averaged over the
  three channels (0.5, a "medium" effect size): the light, exposure or colour of the input changed;
* the standardised shift of the detail (0.5): the input got noisier or softer.

``score`` is the largest of the four ratios; the default threshold 1.0 therefore means "one part
reached its alarm level". PSI is a standard, hand-computed formula (a dozen lines): no maintained
library offers it for pre-binned histograms without pulling in a monitoring framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# confidence bins: CIFAR classifiers are mostly sure, so the bins are fine near 1
CONFIDENCE_EDGES: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
PSI_ALARM = 0.25
SHIFT_ALARM = 0.5
DEFAULT_THRESHOLD = 1.0
_EPS = 1e-4  # keeps empty bins finite in PSI; small against any bin a window of 100+ images fills


@dataclass(frozen=True)
class Summary:
    """What a set of images looks like to the model (see the module docstring)."""

    n_images: int
    channel_mean: tuple[float, float, float]
    channel_std: tuple[float, float, float]
    detail_mean: float
    detail_std: float
    confidence_hist: tuple[float, ...]  # fractions over CONFIDENCE_EDGES bins
    class_hist: tuple[float, ...]  # fractions per class, model order


@dataclass(frozen=True)
class DriftScore:
    score: float
    psi_confidence: float
    psi_class: float
    channel_shift: float
    detail_shift: float
    n_images: int


def channel_means(images_u8: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """N x H x W x 3 uint8 -> N x 3 per-image channel means in [0, 1]."""
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 images, got shape {images_u8.shape}")
    return (images_u8.mean(axis=(1, 2), dtype=np.float64) / 255.0).astype(np.float32)


def detail(images_u8: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """N x H x W x 3 uint8 -> N per-image mean |4-neighbour Laplacian| of the grey image, in [0, 1]."""
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or min(images_u8.shape[1:3]) < 3:
        raise ValueError(f"expected N x H x W x 3 images of at least 3x3, got shape {images_u8.shape}")
    g = images_u8.astype(np.float32).mean(axis=3) / 255.0
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    out: npt.NDArray[np.float32] = np.abs(lap).mean(axis=(1, 2)).astype(np.float32)
    return out


def confidences(probs: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Softmax rows -> (max probability, argmax) per image."""
    return probs.max(axis=1).astype(np.float32), probs.argmax(axis=1).astype(np.int64)


def _hist(values: npt.NDArray[np.float32], edges: Sequence[float]) -> tuple[float, ...]:
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=np.asarray(edges))
    total = max(1, int(counts.sum()))
    return tuple(float(c) / total for c in counts)


def summarize(
    means: npt.NDArray[np.float32],
    details: npt.NDArray[np.float32],
    conf: npt.NDArray[np.float32],
    pred: npt.NDArray[np.int64],
    n_classes: int,
) -> Summary:
    """Summary of per-image statistics (``channel_means``, ``detail`` and ``confidences``)."""
    n = len(conf)
    if n == 0:
        raise ValueError("cannot summarise an empty set of images")
    counts = np.bincount(np.clip(pred, 0, n_classes - 1), minlength=n_classes)
    m = means.mean(axis=0)
    s = means.std(axis=0)
    return Summary(
        n_images=n,
        channel_mean=(float(m[0]), float(m[1]), float(m[2])),
        channel_std=(float(s[0]), float(s[1]), float(s[2])),
        detail_mean=float(details.mean()),
        detail_std=float(details.std()),
        confidence_hist=_hist(conf, CONFIDENCE_EDGES),
        class_hist=tuple(float(c) / n for c in counts),
    )


def psi(reference: Sequence[float], observed: Sequence[float]) -> float:
    """Population stability index of two histograms of fractions over the same bins."""
    r = np.asarray(reference, dtype=np.float64) + _EPS
    o = np.asarray(observed, dtype=np.float64) + _EPS
    if r.shape != o.shape:
        raise ValueError(f"histograms differ in bins: {r.shape} vs {o.shape}")
    r, o = r / r.sum(), o / o.sum()
    return float(np.sum((o - r) * np.log(o / r)))


def score(reference: Summary, window: Summary) -> DriftScore:
    """How far ``window`` has moved from ``reference`` (1.0 = one part at its alarm level)."""
    p_conf = psi(reference.confidence_hist, window.confidence_hist)
    p_class = psi(reference.class_hist, window.class_hist)
    ref_std = np.maximum(np.asarray(reference.channel_std), 1e-3)  # a constant-colour reference has none
    delta = np.abs(np.asarray(window.channel_mean) - np.asarray(reference.channel_mean))
    shift = float(np.mean(delta / ref_std))
    texture = abs(window.detail_mean - reference.detail_mean) / max(reference.detail_std, 1e-4)
    combined = max(p_conf / PSI_ALARM, p_class / PSI_ALARM, shift / SHIFT_ALARM, texture / SHIFT_ALARM)
    return DriftScore(combined, p_conf, p_class, shift, texture, window.n_images)


def summarize_images(images_u8: npt.NDArray[np.uint8], probs: npt.NDArray[np.float32], n_classes: int) -> Summary:
    """Summary of images and the model's softmax outputs for them."""
    conf, pred = confidences(probs)
    return summarize(channel_means(images_u8), detail(images_u8), conf, pred, n_classes)

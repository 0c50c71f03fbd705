"""Drift statistics: the one definition the host (reference, at release time) and the device (what it
serves) both compute, so that the two can be compared.

Two figures, kept apart because they mean different things:

* ``input_drift`` (covariate shift): the input statistics of ``shared.inputstats`` (colour, exposure,
  contrast, black and white points, fine detail, noise floor) against what the reference's images of
  the same predicted classes look like (``inputstats.shifts``), in the reference's within-class spread,
  divided by its alarm level 0.5 (a "medium" effect size). A camera watching one scene serves one
  class at a time: its images are compared with the reference's images of that class, not with the
  whole reference, so a stream of one class is not a field shift. It alone flags drift, and it is
  what ``score`` (the wire's ``DriftStats.score``) carries.
* ``label_drift`` (label shift): PSI of the predicted-class histogram over its alarm level 0.25 (the
  usual "significant shift" level of PSI). The scene mix moved; informational, it never flags.

Also reported, as details: PSI of the confidence histogram (it moves with the class mix too: cats
are read less surely than cars), and the standardised shift of the channel means and of the detail
(mean |Laplacian|) against the whole reference. A reference made before input statistics (no
``inputs``) scores input drift from those two, as before, with their one-class false alarms.

The default threshold 1.0 means "one input statistic reached its alarm level". PSI is a
standard, hand-computed formula (a dozen lines): no maintained library offers it for pre-binned
histograms without pulling in a monitoring framework.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from shared import inputstats
from shared.inputstats import InputProfile

# confidence bins: CIFAR classifiers are mostly sure, so the bins are fine near 1
CONFIDENCE_EDGES: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 1.0)
PSI_ALARM = 0.25
SHIFT_ALARM = 0.5
DEFAULT_THRESHOLD = 1.0
MAX_SCORE = 1e6  # what the wire accepts; a reference without spread can give more
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
    inputs: InputProfile | None = None  # None: a reference made before input statistics


@dataclass(frozen=True)
class DriftScore:
    score: float  # = input_drift: what flags drift
    psi_confidence: float
    psi_class: float
    channel_shift: float
    detail_shift: float
    n_images: int
    input_drift: float = 0.0
    label_drift: float = 0.0
    input_shifts: dict[str, float] = field(default_factory=dict)  # per statistic, in within-class spreads


def channel_means(images_u8: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """N x H x W x 3 uint8 -> N x 3 per-image channel means in [0, 1]."""
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 images, got shape {images_u8.shape}")
    n, pixels = len(images_u8), images_u8.shape[1] * images_u8.shape[2]
    # a matmul, not mean(axis=(1, 2)): numpy's reduction over the middle axes is many times slower here
    sums = np.ones((1, pixels), dtype=np.float32) @ images_u8.reshape(n, pixels, 3).astype(np.float32)
    return (sums[:, 0] / (255.0 * pixels)).astype(np.float32)


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
    inputs: npt.NDArray[np.float32] | None = None,
) -> Summary:
    """Summary of per-image statistics (``channel_means``, ``detail``, ``confidences`` and, when given,
    ``inputstats.image_stats``)."""
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
        inputs=inputstats.profile(inputs, pred, n_classes) if inputs is not None else None,
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
    """How far ``window`` has moved from ``reference``: input drift (the score) and label drift, each
    1.0 at its alarm level (see the module docstring)."""
    p_conf = psi(reference.confidence_hist, window.confidence_hist)
    p_class = psi(reference.class_hist, window.class_hist)
    ref_std = np.maximum(np.asarray(reference.channel_std), 1e-3)  # a constant-colour reference has none
    delta = np.abs(np.asarray(window.channel_mean) - np.asarray(reference.channel_mean))
    shift = float(np.mean(delta / ref_std))
    texture = abs(window.detail_mean - reference.detail_mean) / max(reference.detail_std, 1e-4)
    if reference.inputs is not None and window.inputs is not None:
        parts = inputstats.shifts(reference.inputs, window.inputs, window.class_hist)
        parts = {k: min(v, MAX_SCORE) for k, v in parts.items()}
    else:  # a reference made before input statistics: the whole-reference channel and detail shifts
        parts = {"channel_means": min(shift, MAX_SCORE), "detail": min(texture, MAX_SCORE)}
    input_drift = min(max(parts.values(), default=0.0) / SHIFT_ALARM, MAX_SCORE)
    return DriftScore(
        score=input_drift,
        psi_confidence=p_conf,
        psi_class=p_class,
        channel_shift=min(shift, MAX_SCORE),
        detail_shift=min(texture, MAX_SCORE),
        n_images=window.n_images,
        input_drift=input_drift,
        label_drift=min(p_class / PSI_ALARM, MAX_SCORE),
        input_shifts=parts,
    )


def summarize_images(images_u8: npt.NDArray[np.uint8], probs: npt.NDArray[np.float32], n_classes: int) -> Summary:
    """Summary of images and the model's softmax outputs for them."""
    conf, pred = confidences(probs)
    stats = inputstats.image_stats(images_u8)
    return summarize(stats[:, inputstats.CHANNEL_MEANS], detail(images_u8), conf, pred, n_classes, stats)

"""Input statistics: what the camera, its light and its link did to a picture, as little as possible
of what the picture shows (covariate shift, as opposed to the label shift of a scene of one class).

Per image, on the decoded image at the model's input size (pixels in [0, 1], luma = Rec. 601):

* ``red``, ``green``, ``blue``: channel means (exposure and colour cast: dusk, glare, night);
* ``contrast``: the luma standard deviation (haze and fog pull it down, so does under-exposure);
* ``black``, ``white``: the 5th and 95th luma percentiles (a lifted black level is fog or glare,
  pulled-down highlights are dusk or night);
* ``fine_detail``: log of the mean |I * N| of the luma over that of its 2x-downsampled copy, N being
  Immerkaer's 3x3 noise kernel [1 -2 1] x [1 -2 1]. Blur takes the finest scale first (it falls);
  sensor noise is white and adds most at the finest scale (it rises). A ratio of two scales of the
  same picture, it moves less with the picture's content than either (a 4-neighbour Laplacian in
  its place saw the sensor-noise preset 0.6 times as well, measured);
* ``noise_floor``: Immerkaer's noise estimate, sigma = sqrt(pi/2) / 6 x mean |I * N|, over the
  flattest quarter of a 6 x 6 grid of blocks, so that edges and texture are left out.

Content still moves most of them (a ship is bluer than a frog), so one class at a time is not
compared with the whole reference: ``profile`` keeps the reference's statistics per predicted class,
and ``shifts`` compares a window with the mixture of those class profiles in the window's own
predicted-class proportions. What remains is measured in the reference's within-class spread, after
a tolerance of ``TOLERANCE_Z`` standard errors for the sampling error of the reference's class means
(a reference of 20 images a class has a lot of it) and of the window's mean.

Chosen by measurement on CIFAR-10's test split and its `edgeloop data shift` copies, from 22
candidates (HSV saturation, chroma ratios, JPEG blockiness, dark and bright fractions, Laplacian
variance, ...): every preset moves at least one of these by more than twice the alarm level, while
clean windows of one class stay at a third of it (benchmarks/drift-result.json). JPEG blockiness
caught nothing the others missed, and 8x8 blocks mean little once an image is resized to the input.
A camera on one static scene is not covered: one unusual-looking scene is a shift of its own, so
measure its reference on that camera's clean footage (``edgeloop data reference --data``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

STATS: tuple[str, ...] = ("red", "green", "blue", "contrast", "black", "white", "fine_detail", "noise_floor")
CHANNEL_MEANS = slice(0, 3)  # columns of image_stats that are drift.channel_means
TOLERANCE_Z = 2.0  # standard errors of sampling noise forgiven before a shift counts
MIN_SIZE = 8  # the smallest model input the statistics are defined for (two scales of a 3x3 kernel)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TAIL = 0.05  # the black and white points: 5th and 95th percentiles
_GRID = 6  # noise floor: a GRID x GRID grid of blocks, the flattest quarter of them
_EPS = 1e-4
_MIN_SPREAD = 1e-4  # a reference without spread in a statistic (a constant image) still gives finite shifts

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _highpass(y: F32) -> F32:
    """|y * N| with N = [1 -2 1] x [1 -2 1] (Immerkaer's noise kernel: blind to ramps and to edges of
    one direction, it answers most to the finest, pixel-to-pixel detail, which is where noise sits)."""
    r = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
    out: F32 = np.abs(r[:, :-2] - 2 * r[:, 1:-1] + r[:, 2:])
    return out


def _half(y: F32) -> F32:
    h, w = y.shape[1] // 2 * 2, y.shape[2] // 2 * 2
    e = y[:, :h, :w]
    out: F32 = (e[:, 0::2, 0::2] + e[:, 1::2, 0::2] + e[:, 0::2, 1::2] + e[:, 1::2, 1::2]) * np.float32(0.25)
    return out


def _noise_floor(k: F32) -> F32:
    """Immerkaer's sigma from ``_highpass`` over the flattest quarter of a GRID x GRID grid of blocks."""
    n, bh, bw = len(k), k.shape[1] // _GRID, k.shape[2] // _GRID
    rows = k[:, : bh * _GRID, : bw * _GRID].reshape(n, _GRID, bh, bw * _GRID).sum(axis=2)
    blocks = rows.reshape(n, _GRID, _GRID, bw).sum(axis=3).reshape(n, -1) / (bh * bw)
    quarter = _GRID * _GRID // 4
    flattest = np.partition(blocks, quarter - 1, axis=1)[:, :quarter]
    out: F32 = (flattest.mean(axis=1) * np.sqrt(np.pi / 2) / 6).astype(np.float32)
    return out


def _tails(y: F32) -> tuple[F32, F32]:
    """The black and white points of each image (luma percentiles, to 1/255), from a 256-bin histogram."""
    n, pixels = len(y), y.shape[1] * y.shape[2]
    levels = np.rint(y * 255).astype(np.int64).reshape(n, -1) + 256 * np.arange(n)[:, None]
    cdf = np.bincount(levels.ravel(), minlength=256 * n).reshape(n, 256).cumsum(axis=1)
    k = round(_TAIL * (pixels - 1))
    black = np.argmax(cdf > k, axis=1) / 255.0
    white = np.argmax(cdf > pixels - 1 - k, axis=1) / 255.0
    return black.astype(np.float32), white.astype(np.float32)


def image_stats(images_u8: npt.NDArray[np.uint8]) -> F32:
    """N x H x W x 3 uint8 RGB -> N x len(STATS) per-image input statistics (see the module docstring)."""
    if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or min(images_u8.shape[1:3]) < MIN_SIZE:
        raise ValueError(f"expected N x H x W x 3 images of at least {MIN_SIZE}x{MIN_SIZE}, got {images_u8.shape}")
    x: F32 = images_u8.astype(np.float32) * np.float32(1 / 255)
    n = len(x)
    y: F32 = x @ _LUMA
    # a matmul, not x.mean(axis=(1, 2)): numpy's reduction over the middle axes is 15x slower here
    means = (np.ones((1, y[0].size), dtype=np.float32) @ x.reshape(n, -1, 3))[:, 0] / y[0].size
    k = _highpass(y)
    fine, coarse = k.mean(axis=(1, 2)), _highpass(_half(y)).mean(axis=(1, 2))
    columns = (
        *means.T,
        y.reshape(n, -1).std(axis=1),
        *_tails(y),
        np.log((fine + _EPS) / (coarse + _EPS)),
        _noise_floor(k),
    )
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass(frozen=True)
class InputProfile:
    """Input statistics of a set of images: overall, and per predicted class (``profile``)."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_counts: tuple[int, ...]
    class_mean: tuple[tuple[float, ...], ...]  # classes x statistics; the overall mean where a class has none
    class_std: tuple[tuple[float, ...], ...]


def _rows(a: F64) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in a)


def profile(stats: F32, pred: npt.NDArray[np.int64], n_classes: int, names: tuple[str, ...] = STATS) -> InputProfile:
    """The profile of per-image ``stats`` (N x K, ``image_stats``) of images the model read as ``pred``."""
    if stats.ndim != 2 or stats.shape[1] != len(names) or len(stats) != len(pred) or not len(stats):
        raise ValueError(f"expected N x {len(names)} statistics and N predictions, got {stats.shape}, {len(pred)}")
    s = stats.astype(np.float64)
    p = np.clip(pred, 0, n_classes - 1)
    counts = np.bincount(p, minlength=n_classes).astype(np.float64)
    sums = np.stack([np.bincount(p, weights=col, minlength=n_classes) for col in s.T], axis=1)
    squares = np.stack([np.bincount(p, weights=col * col, minlength=n_classes) for col in s.T], axis=1)
    mean, var = s.mean(axis=0), s.var(axis=0)
    seen = counts[:, None] > 0
    c_mean = np.where(seen, sums / np.maximum(counts, 1)[:, None], mean)
    c_var = np.where(seen, squares / np.maximum(counts, 1)[:, None] - c_mean**2, var)
    return InputProfile(
        names=tuple(names),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in np.sqrt(var)),
        class_counts=tuple(int(c) for c in counts),
        class_mean=_rows(c_mean),
        class_std=_rows(np.sqrt(np.maximum(c_var, 0.0))),
    )


def shifts(reference: InputProfile, window: InputProfile, class_hist: tuple[float, ...]) -> dict[str, float]:
    """How far each statistic of ``window`` is from what the reference expects of its class mix.

    The unit is the reference's pooled within-class standard deviation; the first ``TOLERANCE_Z``
    standard errors of the comparison count as nothing. Statistics only one side has are skipped.
    """
    common = [name for name in reference.names if name in window.names]
    ri = [reference.names.index(name) for name in common]
    wi = [window.names.index(name) for name in common]
    h = np.asarray(class_hist, dtype=np.float64)
    counts = np.asarray(reference.class_counts, dtype=np.float64)
    if h.shape != counts.shape:
        raise ValueError(f"class histograms differ in classes: {len(h)} vs {len(counts)}")
    c_mean = np.asarray(reference.class_mean, dtype=np.float64)[:, ri]
    c_var = np.asarray(reference.class_std, dtype=np.float64)[:, ri] ** 2
    spread = np.sqrt(counts @ c_var / max(1.0, counts.sum()))
    expected = h @ c_mean
    n = sum(window.class_counts)
    w_var = np.asarray(window.std, dtype=np.float64)[wi] ** 2
    se = np.sqrt((h**2 / np.maximum(counts, 1.0)) @ c_var + w_var / max(1, n))
    gap = np.abs(np.asarray(window.mean, dtype=np.float64)[wi] - expected) - TOLERANCE_Z * se
    out = np.maximum(gap, 0.0) / np.maximum(spread, _MIN_SPREAD)
    return {name: float(v) for name, v in zip(common, out, strict=True)}

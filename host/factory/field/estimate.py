"""Estimate a field's degradation from unlabelled samples: the ``Degradation`` that, applied to the
clean training images, makes their statistics (``estimate_stats``) match the field's.

Hand-written, because no library here does it: estimators exist for single effects (scikit-image's
wavelet noise sigma, JPEG quality read from a file's quantisation tables), but field samples arrive
decoded (PNG, frames) and their effects mix (JPEG removes noise, noise adds detail that blur removed),
and neither scikit-image nor scipy is a dependency. The search is small, so it is written out:

1. the tone curve (gain, gamma, offset, colour cast) from the per-channel quantiles. A monotone
   curve maps each quantile of the clean pixels onto the same quantile of the field's, so for each
   gamma on a grid, and each offset, the best per-channel gains are a closed-form least-squares fit;
   saturated quantiles (0 or 255) are left out. Haze (contrast pulled to a veil) is the same curve
   as a lower gain plus an offset, so the estimate folds it into those (``haze`` stays 0), and the
   cast is normalised to green = 1 (the gain carries the rest);
2. blur, noise and JPEG quality by simulation: the clean images degraded with a candidate (tone
   included) are measured and compared with the field on the detail features (squared log ratios),
   in coordinate sweeps over grids, then a finer local search;
3. a joint refinement of every parameter on all the statistics, because blur and noise also move
   the quantiles that step 1 read.

Every simulation reuses one seeded noise draw, so the objective is a deterministic function of the
parameters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from host.factory.field import degrade, estimate_stats
from host.factory.field.degrade import Degradation
from host.factory.field.estimate_stats import Stats

log = logging.getLogger(__name__)

JPEG_LEVELS: tuple[int | None, ...] = (None, 95, 90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40, 35, 30, 25, 20)
COARSE_JPEG: tuple[int | None, ...] = (None, 95, 90, 80, 70, 60, 50, 40, 30, 20)  # then +-5 locally
COARSE_BLUR = (0.0, 0.6)
# OpenCV's Gaussian of sigma < 0.25 leaves 8-bit images as they are: the fine grid starts above it
VALLEY_BLUR = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4)
COARSE_IMAGES = 96  # the blur-noise valley
JPEG_IMAGES = 48  # the JPEG quality (a strong signal)
LOCAL_STEPS = ((0.05, 0.5), (0.02, 0.25))
OCCAM = 0.002
GAMMA_GRID = np.exp(np.linspace(np.log(0.5), np.log(2.0), 57))
OFFSET_GRID = np.linspace(-0.4, 0.4, 81)  # offset / (255 * gain)
BOUNDS: dict[str, tuple[float, float]] = {
    "gain": (0.1, 3.0), "gamma": (0.4, 2.5), "offset": (-80.0, 120.0), "cast_r": (0.5, 1.6), "cast_b": (0.5, 1.6),
    "blur": (0.0, 2.5), "noise": (0.0, 40.0),
}  # fmt: skip
SEED = 0

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Estimate:
    """What was estimated, from what, and how well the degraded clean set then matches the field."""

    degradation: Degradation
    field: Stats
    clean: Stats
    matched: Stats  # the clean images degraded with ``degradation``
    distance: float  # objective at the estimate (0: a perfect match)
    evaluations: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "degradation": self.degradation.to_dict(),
            "field": self.field.to_dict(),
            "clean": self.clean.to_dict(),
            "matched": self.matched.to_dict(),
            "distance": round(self.distance, 5),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 2),
        }


def fit_tone(clean_q: npt.NDArray[np.float32], field_q: npt.NDArray[np.float32]) -> Degradation:
    """Step 1: gain, gamma, offset and cast that map the clean quantiles (3 x P) onto the field's.

    The model is ``Degradation``'s own order: y_c = clip(cast_c * clip(255 * gain * (u ** gamma + k))),
    u = x / 255, k = offset / (255 * gain), cast_g = 1. For every (gamma, k) on the grids the gain
    is the least-squares fit of the unclipped green quantiles and each cast the least-squares fit
    of its channel's unclipped quantiles given that exposure (which may itself clip at 255: a cast
    after a burnt-out exposure shows as a channel whose top sits at 255 * cast).
    """
    y = field_q.astype(np.float64)[None, None]  # 1 x 1 x 3 x P
    u = (np.clip(clean_q, 0.5, 255.0) / 255.0)[None, None] ** GAMMA_GRID[:, None, None, None]
    v = u + OFFSET_GRID[None, :, None, None]  # G x K x 3 x P
    ok = (y > 1.0) & (y < 254.0)  # a clipped quantile says only "at least this far"
    if ok[..., 1, :].sum() < 3:
        return Degradation()
    a_g = (ok[..., 1, :] * v[..., 1, :] * y[..., 1, :]).sum(-1) / np.maximum(
        (ok[..., 1, :] * v[..., 1, :] ** 2).sum(-1), 1e-12
    )
    gain = np.clip(a_g / 255.0, *BOUNDS["gain"])  # G x K
    exposed = np.clip(255.0 * gain[..., None, None] * v, 0.0, 255.0)
    cast = (ok * exposed * y).sum(-1) / np.maximum((ok * exposed**2).sum(-1), 1e-12)  # G x K x 3
    cast[..., 1] = 1.0
    cast = np.clip(cast, BOUNDS["cast_r"][0], BOUNDS["cast_r"][1])
    err = ((np.clip(cast[..., None] * exposed, 0.0, 255.0) - y) ** 2).sum((-1, -2))
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    g = float(gain[i, j])
    c = cast[i, j]
    return _clamped(
        Degradation(
            cast=(float(c[0]), 1.0, float(c[2])),
            gain=g,
            gamma=float(GAMMA_GRID[i]),
            offset=255.0 * g * float(OFFSET_GRID[j]),
        )
    )


def _clamped(d: Degradation) -> Degradation:
    def c(name: str, v: float) -> float:
        lo, hi = BOUNDS[name]
        return float(min(hi, max(lo, v)))

    return replace(
        d,
        gain=c("gain", d.gain),
        gamma=c("gamma", d.gamma),
        offset=c("offset", d.offset),
        cast=(c("cast_r", d.cast[0]), 1.0, c("cast_b", d.cast[2])),
        blur=c("blur", d.blur),
        noise=c("noise", d.noise),
    )


def simulate(d: Degradation, images: U8, rng: np.random.Generator) -> U8:
    """``[d.apply(im, rng) for im in images]``, the same pixels and noise draws, with the per-pixel
    steps done on the whole batch at once (5x faster on 32x32 images)."""
    out = np.stack([degrade.blur(im, d.blur) for im in images]) if d.blur > 0 else images
    if d.haze > 0:
        out = degrade.haze(out, d.haze)
    if (d.gain, d.gamma, d.offset) != (1.0, 1.0, 0.0):
        out = degrade.exposure(out, d.gain, d.gamma, d.offset)
    if d.cast != (1.0, 1.0, 1.0):
        out = degrade.colour_cast(out, d.cast)
    if d.noise > 0:
        out = degrade.noise(out, d.noise, rng)
    if d.jpeg_quality is not None:
        out = np.stack([degrade.jpeg(im, d.jpeg_quality) for im in out])
    return out


class _Objective:
    """How far the clean sample, degraded with a candidate, is from the field (memoised by candidate).

    Blur, noise and JPEG are judged on the detail features (squared log ratios), plus a small price
    on each effect so that equally good fits resolve to the milder one; the tone is fitted on the
    quantiles separately (``fit_tone``), as they say nothing about detail."""

    def __init__(self, clean: U8, field: Stats) -> None:
        self.clean, self.field = clean, field
        self.log_field = np.log(field.detail + 0.05)
        self.cache: dict[Degradation, npt.NDArray[np.float32]] = {}

    def simulate(self, d: Degradation) -> U8:
        return simulate(d, self.clean, np.random.default_rng(SEED))  # the same noise draw for every candidate

    def detail(self, d: Degradation) -> npt.NDArray[np.float32]:
        key = _rounded(d)
        if key not in self.cache:
            self.cache[key] = estimate_stats.detail(self.simulate(key))
        return self.cache[key]

    def stats(self, d: Degradation) -> Stats:
        return estimate_stats.measure(self.simulate(_rounded(d)))

    def __call__(self, d: Degradation) -> float:
        distance = float(((np.log(self.detail(d) + 0.05) - self.log_field) ** 2).sum())
        q = d.jpeg_quality
        mild = d.blur + d.noise / 10.0 + (0.0 if q is None else (100 - q) / 100.0)
        return distance + OCCAM * mild


def _rounded(d: Degradation) -> Degradation:
    """Candidates closer than these steps are the same candidate (keeps the memo effective)."""
    return Degradation(
        cast=(round(d.cast[0], 3), round(d.cast[1], 3), round(d.cast[2], 3)),
        gain=round(d.gain, 3),
        gamma=round(d.gamma, 3),
        offset=round(d.offset, 1),
        haze=round(d.haze, 3),
        blur=round(d.blur, 3),
        noise=round(d.noise, 2),
        jpeg_quality=d.jpeg_quality,
    )


def _golden(f: Callable[[float], float], lo: float, hi: float, iterations: int = 6) -> float:
    """Golden-section search for the minimum of a one-dimensional ``f`` on [lo, hi]."""
    r = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return c if fc <= fd else d


def _jpeg_level(objective: _Objective, tone: Degradation) -> int | None:
    """Step 2a: the JPEG quality that fits best with its best noise level, unblurred or blurred."""
    best: tuple[float, int | None] = (np.inf, None)
    for q in COARSE_JPEG:
        for b in COARSE_BLUR:
            d = replace(tone, jpeg_quality=q, blur=b)
            s = _golden(lambda s, d=d: objective(replace(d, noise=s)), 0.0, BOUNDS["noise"][1] / 2)  # type: ignore[misc]
            score = objective(replace(d, noise=s))
            if score < best[0]:
                best = (score, q)
    return best[1]


def _valley(objective: _Objective, d: Degradation) -> Degradation:
    """Step 2b: blur and noise trade off (blur hides noise, noise restores detail that blur took), so
    their good fits lie along a narrow valley: for each blur on a fine grid, the best noise level."""
    best: tuple[float, Degradation] = (np.inf, d)
    for b in VALLEY_BLUR:
        s = _golden(lambda s, b=b: objective(replace(d, blur=b, noise=s)), 0.0, BOUNDS["noise"][1] / 2)  # type: ignore[misc]
        cand = _clamped(replace(d, blur=b, noise=s))
        score = objective(cand)
        if score < best[0]:
            best = (score, cand)
    return best[1]


def _neighbours(d: Degradation, step_blur: float, step_noise: float) -> list[Degradation]:
    """One step along blur, noise, both (blur and noise trade off: more of one hides the other)
    and to the next JPEG level either side."""
    moves = [(b, s) for b in (-step_blur, 0.0, step_blur) for s in (-step_noise, 0.0, step_noise) if b or s]
    out = [_clamped(replace(d, blur=d.blur + b, noise=d.noise + s)) for b, s in moves]
    i = JPEG_LEVELS.index(d.jpeg_quality)
    out += [replace(d, jpeg_quality=JPEG_LEVELS[j]) for j in (i - 1, i + 1) if 0 <= j < len(JPEG_LEVELS)]
    return out


def _local(objective: _Objective, d: Degradation, steps: tuple[tuple[float, float], ...]) -> Degradation:
    """Step 2b: best-neighbour moves while they improve, at each step size in turn."""
    best = objective(d)
    for step_blur, step_noise in steps:
        for _ in range(30):
            cands = _neighbours(d, step_blur, step_noise)
            scores = [objective(c) for c in cands]
            i = int(np.argmin(scores))
            if scores[i] >= best:
                break
            d, best = cands[i], scores[i]
    return d


def fit_detail(coarse: _Objective, fine: _Objective, tone: Degradation) -> Degradation:
    """Step 2: the JPEG quality and the blur-noise valley on a few images, then local moves on all."""
    d = replace(tone, jpeg_quality=_jpeg_level(_Objective(coarse.clean[:JPEG_IMAGES], coarse.field), tone))
    return _local(fine, _valley(coarse, d), LOCAL_STEPS)


def correct_tone(objective: _Objective, clean_q: npt.NDArray[np.float32], d: Degradation) -> Degradation:
    """Step 3: refit the tone with what blur, noise and JPEG do to the quantiles taken out.

    ``fit_tone`` maps clean quantiles through the tone curve alone. The simulation of ``d`` shows
    how far the full degradation moves them beyond that curve; the field's quantiles less that
    shift are what the curve alone must produce."""
    tone_only = replace(d, blur=0.0, noise=0.0, jpeg_quality=None)
    shift = objective.stats(d).quantiles - objective.stats(tone_only).quantiles
    tone = fit_tone(clean_q, objective.field.quantiles - shift)
    return replace(d, cast=tone.cast, gain=tone.gain, gamma=tone.gamma, offset=tone.offset)


def estimate(field: U8, clean: U8, max_images: int = 1000, clean_images: int = 384) -> Estimate:
    """The ``Degradation`` that turns ``clean`` (training images) into something like ``field``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(SEED)
    if len(field) > max_images:
        field = field[np.sort(rng.choice(len(field), max_images, replace=False))]
    ref = clean[np.sort(rng.choice(len(clean), min(clean_images, len(clean)), replace=False))]
    f_stats, c_stats = estimate_stats.measure(field), estimate_stats.measure(ref)
    fine = _Objective(ref, f_stats)
    coarse = _Objective(ref[:COARSE_IMAGES], f_stats)
    d = fit_tone(c_stats.quantiles, f_stats.quantiles)
    log.info("tone from the quantiles: %s", d)
    d = fit_detail(coarse, fine, d)
    log.info("blur, noise and JPEG by simulation: %s", d)
    for _ in range(2):
        d = correct_tone(fine, c_stats.quantiles, d)
        d = _local(fine, d, LOCAL_STEPS[-1:])
    log.info("estimated: %s", d)
    return Estimate(
        degradation=_rounded(d),
        field=f_stats,
        clean=c_stats,
        matched=fine.stats(d),
        distance=fine(d),
        evaluations=len(fine.cache) + len(coarse.cache),
        seconds=time.perf_counter() - t0,
    )

"""INT8 against FP32 on the device's own images: an INT8 engine goes live only when it agrees.

INT8's job is to give the FP32 model's answers faster. With labels (the golden images, an eval set)
the check is also the accuracy drop in points; without labels (field images) it is the top-1
agreement with FP32 alone.

An agreement measured on a few dozen images is noisy (two disagreements in 50 images read 96%),
so an engine fails only when the data say it is below the bar: when even the upper end of the 95%
Wilson interval of its agreement is under ``min_agreement``. On thousands of images the interval is
narrow and the rule is the plain comparison.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from device.runtimes.base import Runtime
from shared import imaging
from shared.imaging import Preprocessing


@dataclass(frozen=True)
class Verification:
    n_images: int
    agreement: float  # fraction of images where both give the same top-1
    top1_reference: float | None  # with labels
    top1_candidate: float | None
    drop_points: float | None  # (reference - candidate) x 100, with labels
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def wilson_upper(successes: int, n: int, z: float = 1.96) -> float:
    """Upper end of the Wilson score interval of a binomial proportion (hand-written: eight lines, and
    the libraries that have it, statsmodels and scipy, are not device dependencies)."""
    if n == 0:
        return 1.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def predictions(runtime: Runtime, images: npt.NDArray[np.uint8], prep: Preprocessing, batch: int = 256) -> np.ndarray:
    step = min(batch, runtime.engine.max_batch)
    out = [runtime.infer(imaging.normalize(images[i : i + step], prep)).argmax(1) for i in range(0, len(images), step)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def compare(
    candidate: Runtime,
    reference: Runtime,
    images: npt.NDArray[np.uint8],
    prep: Preprocessing,
    labels: npt.NDArray[np.int64] | None = None,
    max_drop_points: float = 1.0,
    min_agreement: float = 0.97,
) -> Verification:
    """Verify ``candidate`` (e.g. an INT8 engine) against ``reference`` (its FP32 model) on ``images``."""
    if len(images) == 0:
        return Verification(0, 0.0, None, None, None, False, "no images to verify on")
    got, ref = predictions(candidate, images, prep), predictions(reference, images, prep)
    agreement = float((got == ref).mean())
    top_ref = top_got = drop = None
    if labels is not None:
        top_ref, top_got = float((ref == labels).mean()), float((got == labels).mean())
        drop = 100 * (top_ref - top_got)
    problems = []
    if wilson_upper(int((got == ref).sum()), len(images)) < min_agreement:
        problems.append(
            f"top-1 agreement with FP32 {100 * agreement:.1f}% of {len(images)} images is below "
            f"{100 * min_agreement:.1f}% (95% interval)"
        )
    if drop is not None and drop > max_drop_points:
        problems.append(f"accuracy drop {drop:.2f} points > {max_drop_points:.2f}")
    reason = "; ".join(problems) or (
        f"agrees with FP32 on {100 * agreement:.1f}% of {len(images)} images"
        + (f", {drop:+.2f} points" if drop is not None else "")
    )
    return Verification(len(images), agreement, top_ref, top_got, drop, not problems, reason)

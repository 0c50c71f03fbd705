"""INT8 against FP32 on the device's own images: an INT8 engine goes live only when it agrees.

INT8's job is to give the FP32 model's answers faster. With labels (the golden images, an eval set)
the check is also the accuracy drop in points; without labels (field images) it is the top-1
agreement with FP32 alone.

An agreement measured on a few dozen images is noisy (two disagreements in 50 images read 96%),
so an engine fails only when the data say it is below the bar: when even the upper end of the 95%
Wilson interval of its agreement is under ``min_agreement``. On thousands of images the interval is
narrow and the rule is the plain comparison.

The accuracy drop is decided on integer image counts, never on a float of points: on ``n`` images
the drop moves in steps of ``100 / n`` points (0.5 on the 200 golden images), and "2 of 200 images
= 1.0000000000000009 points > 1.0" once refused a good engine on an AVX-512 VNNI CPU. The engine
is refused when it loses more images net than the allowance (``floor(max_drop x n / 100)``) *and*
the loss is real: the paired, exact one-sided McNemar test on the images the two disagree on
(FP32 right and INT8 wrong vs the reverse) gives p < ``alpha``. Two engines that disagree on a few
borderline images, one way on this CPU and the other way on the next, are not a measured drop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from device.engine.runtimes.base import Runtime
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
    lost: int | None = None  # with labels: images the reference gets right and the candidate wrong
    gained: int | None = None  # and the reverse

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


def allowed_loss(max_drop_points: float, n: int) -> int:
    """How many images net the candidate may lose of ``n``: exact decimal arithmetic, no float boundary."""
    return math.floor(Fraction(repr(float(max_drop_points))) * n / 100)


def mcnemar_p(lost: int, gained: int) -> float:
    """One-sided exact McNemar p-value that losses outnumber gains by chance: P(X >= lost), X ~ Bin(lost +
    gained, 1/2). (Hand-written: the binomial tail is three lines, and scipy/statsmodels are not device
    dependencies.)"""
    n = lost + gained
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n)


def drop_refused(lost: int, gained: int, n: int, max_drop_points: float, alpha: float = 0.05) -> bool:
    """Whether a candidate that lost ``lost`` and gained ``gained`` of ``n`` labelled images drops too much."""
    return lost - gained > allowed_loss(max_drop_points, n) and mcnemar_p(lost, gained) < alpha


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
    lost = gained = None
    if labels is not None:
        ref_right, got_right = ref == labels, got == labels
        top_ref, top_got = float(ref_right.mean()), float(got_right.mean())
        lost, gained = int((ref_right & ~got_right).sum()), int((got_right & ~ref_right).sum())
        drop = 100 * (lost - gained) / len(images)
    problems = []
    if wilson_upper(int((got == ref).sum()), len(images)) < min_agreement:
        problems.append(
            f"top-1 agreement with FP32 {100 * agreement:.1f}% of {len(images)} images is below "
            f"{100 * min_agreement:.1f}% (95% interval)"
        )
    if lost is not None and gained is not None and drop_refused(lost, gained, len(images), max_drop_points):
        problems.append(
            f"accuracy drop {drop:.2f} points > {max_drop_points:.2f}: {lost - gained} images net of "
            f"{len(images)} (lost {lost}, gained {gained}; allowed {allowed_loss(max_drop_points, len(images))}; "
            f"McNemar p = {mcnemar_p(lost, gained):.3g})"
        )
    reason = "; ".join(problems) or (
        f"agrees with FP32 on {100 * agreement:.1f}% of {len(images)} images"
        + (f", accuracy drop {drop:.2f} points (lost {lost}, gained {gained})" if drop is not None else "")
    )
    return Verification(len(images), agreement, top_ref, top_got, drop, not problems, reason, lost, gained)

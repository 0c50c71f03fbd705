"""``edgeloop data shift SRC --out DST --preset NAME [--seed N]``: a seeded copy of a data set as the
field would see it. Each preset draws every image's own degradation from fixed ranges, so a copy
varies like real footage does, and the same seed gives the same copy, byte for byte.

The copy keeps the folder layout (one folder per class), so it is still labelled, and it is written
as PNG, so that the preset's own JPEG step is the only compression it adds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.factory.field.degrade import Degradation
from shared import datasets, imaging
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

Draw = Callable[[np.random.Generator], Degradation]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    draw: Draw


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "dusk",
            "under-exposed and bluish, a little sensor noise, JPEG q 70",
            lambda r: Degradation(cast=(0.9, 0.95, 1.1), gain=_u(r, 0.55, 0.7), gamma=1.1,
                                  noise=_u(r, 3, 5), jpeg_quality=70),
        ),
        Preset(
            "glare",
            "over-exposed and warm (sun on the lens), JPEG q 75",
            lambda r: Degradation(cast=(1.08, 1.02, 0.92), gain=_u(r, 1.2, 1.4), gamma=0.9,
                                  offset=_u(r, 10, 20), jpeg_quality=75),
        ),
        Preset(
            "fog",
            "hazy and low in contrast, slightly soft",
            lambda r: Degradation(haze=_u(r, 0.3, 0.4), blur=_u(r, 0.3, 0.5), jpeg_quality=80),
        ),
        Preset(
            "defocus",
            "a little out of focus, then compressed hard (JPEG q 50)",
            lambda r: Degradation(blur=_u(r, 0.6, 0.8), jpeg_quality=50),
        ),
        Preset(
            "sensor-noise",
            "Gaussian sensor noise (a cheap camera at high gain), JPEG q 80",
            lambda r: Degradation(noise=_u(r, 10, 14), jpeg_quality=80),
        ),
        Preset(
            "night",
            "the strongest: dark, noisy, soft and green-blue, JPEG q 50",
            lambda r: Degradation(cast=(0.85, 1.0, 1.12), gain=_u(r, 0.4, 0.5), gamma=1.15,
                                  blur=_u(r, 0.4, 0.6), noise=_u(r, 5, 8), jpeg_quality=50),
        ),
    )
}  # fmt: skip


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise EdgeloopError(f"unknown shift preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def shift_images(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """Degrade N x H x W x 3 images in memory with ``name`` (the same draws as ``shift_dataset``)."""
    p = preset(name)
    rng = np.random.default_rng(seed)
    return np.stack([p.draw(rng).apply(im, rng) for im in images]) if len(images) else images.copy()


def shift_dataset(src: str | Path, out: Path, name: str, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> dict[str, object]:  # fmt: skip
    """Write a shifted copy of the labelled set ``src`` (folder or .tar.gz[::sub]) under ``out``."""
    p = preset(name)
    samples = datasets.list_samples(src)
    if out.exists() and any(out.iterdir()):
        raise EdgeloopError(f"{out} is not empty; choose a new --out")
    rng = np.random.default_rng(seed)
    members = datasets.archive_members(samples)
    cv2 = imaging.opencv()
    for i, sample in enumerate(samples):
        img = imaging.decode(datasets.read_sample(sample, members))
        shifted = p.draw(rng).apply(img, rng)
        dest = out / sample.class_name / f"{i:06d}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(dest), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR)):
            raise EdgeloopError(f"cannot write {dest}")
        if progress is not None:
            progress(1)
    record: dict[str, object] = {"source": str(src), "preset": name, "description": p.description,
                                 "seed": seed, "images": len(samples)}  # fmt: skip
    (out / "shift.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("wrote %d %s images under %s", len(samples), name, out)
    return record

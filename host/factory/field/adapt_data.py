"""Field samples for ``edgeloop adapt``: any folder of images, read recursively, unlabelled.

Sub-folders are allowed (a labelled set, a device's upload folders) and their names are ignored.
The images are decoded strictly (a truncated JPEG or PNG is refused, not half-decoded) and brought to
the model's input size, because what the estimator must see is what the model sees. A set is refused
with a message that says what to fix when it is empty or too small, when files are not readable
images, or when images are smaller than the model's input (upscaling would invent the blur that the
estimate then reports).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shared import datasets, imaging
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

MIN_FIELD_IMAGES = 16


def field_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise EdgeloopError(f"--field-samples: {folder} is not a folder of images")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)


def load_field_samples(
    folder: Path,
    size: int,
    min_images: int = MIN_FIELD_IMAGES,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> npt.NDArray[np.uint8]:
    """Every image under ``folder`` (at most ``limit``, spread evenly), size x size RGB uint8."""
    files = field_files(folder)
    if len(files) < min_images:
        found = "no images" if not files else f"only {len(files)} images"
        raise EdgeloopError(
            f"--field-samples: {found} in {folder} ({', '.join(sorted(datasets.IMAGE_SUFFIXES))}); "
            f"at least {min_images} are needed to estimate the field"
        )
    if limit is not None and len(files) > limit:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    images, bad, small = [], [], []
    for f in files:
        try:
            img = imaging.decode(f.read_bytes(), strict=True)
        except (OSError, EdgeloopError) as e:
            bad.append(f"{f.name}: {e}")
            continue
        if min(img.shape[:2]) < size:
            small.append(f"{f.name} ({img.shape[1]}x{img.shape[0]})")
            continue
        images.append(imaging.resize(img, size))
        if progress is not None:
            progress(1)
    if bad:
        raise EdgeloopError(
            f"--field-samples: {len(bad)} of {len(files)} files in {folder} are not readable images "
            f"({'; '.join(bad[:5])}); remove or replace them"
        )
    if small:
        raise EdgeloopError(
            f"--field-samples: {len(small)} images are smaller than the model's {size}x{size} input "
            f"(e.g. {', '.join(small[:3])}); use frames at the camera's resolution"
        )
    log.info("read %d field samples from %s", len(images), folder)
    return np.stack(images)

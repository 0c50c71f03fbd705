"""Calibration sets: field or local images checked before they may calibrate anything.

A set is refused, with a message that says what is wrong, when it has too few images, files that
are not readable images, images smaller than the model's input, or mostly constant images (all
black, all white, a lens cap): calibrating on those would move every activation range and the
re-calibrated engine would be worse than the one running.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shared import datasets, imaging
from shared.errors import EdgeloopError

log = logging.getLogger(__name__)

MIN_IMAGES = 32
CONSTANT_STD = 2.0  # an image whose pixels vary less than this (0-255) carries no signal
MAX_CONSTANT_FRACTION = 0.10  # more constant images than this and the set is refused


class CalibrationSetError(EdgeloopError):
    """A calibration set that must not be used; ``code`` names why in the EventReport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class CalibrationSet:
    images: npt.NDArray[np.uint8]  # N x size x size x 3
    files: list[Path]
    skipped_constant: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def split(self, n_calibration: int, seed: int = 0) -> tuple[CalibrationSet, CalibrationSet]:
        """A seeded random split: at most ``n_calibration`` images to calibrate, the rest held out."""
        order = np.random.default_rng(seed).permutation(len(self))
        k = min(n_calibration, len(self))
        return self._take(np.sort(order[:k])), self._take(np.sort(order[k:]))

    def _take(self, idx: npt.NDArray[np.int64]) -> CalibrationSet:
        return CalibrationSet(self.images[idx], [self.files[int(i)] for i in idx])


def image_files(source: Path | Sequence[Path]) -> list[Path]:
    if isinstance(source, Path):
        if not source.is_dir():
            raise CalibrationSetError("calibration_set_missing", f"calibration images: {source} is not a folder")
        return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in datasets.IMAGE_SUFFIXES)
    return sorted(source)


def _decode(files: list[Path]) -> tuple[list[npt.NDArray[np.uint8]], list[tuple[Path, str]]]:
    good, bad = [], []
    for f in files:
        try:
            good.append(imaging.decode(f.read_bytes(), strict=True))
        except (OSError, EdgeloopError) as e:
            bad.append((f, str(e)))
    return good, bad


def load(source: Path | Sequence[Path], size: int, min_images: int = MIN_IMAGES) -> CalibrationSet:
    """Read, check and resize a calibration set (a folder, recursively, or a list of files)."""
    files = image_files(source)
    if len(files) < min_images:
        raise CalibrationSetError(
            "calibration_set_too_small",
            f"{len(files)} calibration images in {source}; at least {min_images} are needed",
        )
    decoded, bad = _decode(files)
    if bad:
        shown = "; ".join(f"{p.name}: {why}" for p, why in bad[:5])
        raise CalibrationSetError(
            "calibration_set_unreadable",
            f"{len(bad)} of {len(files)} calibration files are not readable images ({shown})",
        )
    small = [f for f, im in zip(files, decoded, strict=True) if min(im.shape[:2]) < size]
    if small:
        raise CalibrationSetError(
            "calibration_set_wrong_size",
            f"{len(small)} calibration images are smaller than the model's {size}x{size} input "
            f"(e.g. {small[0].name}); use frames at the camera's resolution",
        )
    resized = np.stack([imaging.resize(im, size) for im in decoded])
    constant = resized.reshape(len(resized), -1).std(axis=1) < CONSTANT_STD
    if constant.mean() > MAX_CONSTANT_FRACTION:
        raise CalibrationSetError(
            "calibration_set_constant",
            f"{int(constant.sum())} of {len(files)} calibration images are constant (all black, all white or one "
            "colour): they carry nothing to calibrate on",
        )
    keep = ~constant
    kept = [f for f, k in zip(files, keep, strict=True) if k]
    if len(kept) < min_images:
        raise CalibrationSetError(
            "calibration_set_too_small", f"{len(kept)} usable calibration images; {min_images} needed"
        )
    skipped = [f for f, k in zip(files, keep, strict=True) if not k]
    if skipped:
        log.info("skipping %d constant calibration images", len(skipped))
    return CalibrationSet(resized[keep], kept, skipped)

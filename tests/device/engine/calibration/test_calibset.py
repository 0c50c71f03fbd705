from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from device.engine.calibration import calibset
from shared import imaging


def _copy(golden_dir: Path, dst: Path, n: int) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(golden_dir.rglob("*.jpg"))[:n]
    for f in files:
        shutil.copy(f, dst / f"{f.parent.name}-{f.name}")
    return sorted(dst.iterdir())


def _png(path: Path, img: np.ndarray) -> None:
    cv2 = imaging.opencv()
    cv2.imwrite(str(path), img)


def test_a_good_set_loads_resized(golden_dir: Path, tmp_path: Path) -> None:
    _copy(golden_dir, tmp_path / "c", 40)
    big = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    _png(tmp_path / "c" / "frame.png", big)  # a camera frame larger than the input: resized
    s = calibset.load(tmp_path / "c", size=32)
    assert len(s) == 41 and s.images.shape == (41, 32, 32, 3)
    a, b = s.split(30)
    assert len(a) == 30 and len(b) == 11 and not set(a.files) & set(b.files)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        ("too_few", "calibration_set_too_small"),
        ("unreadable", "calibration_set_unreadable"),
        ("black", "calibration_set_constant"),
        ("small", "calibration_set_wrong_size"),
        ("missing", "calibration_set_missing"),
    ],
)
def test_bad_sets_are_refused_with_a_reason(golden_dir: Path, tmp_path: Path, make: str, code: str) -> None:
    d = tmp_path / "c"
    if make != "missing":
        _copy(golden_dir, d, 10 if make == "too_few" else 40)
    if make == "unreadable":
        (d / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    elif make == "black":
        for i in range(20):
            _png(d / f"black-{i}.png", np.zeros((32, 32, 3), np.uint8))
    elif make == "small":
        _png(d / "tiny.png", np.full((16, 16, 3), 100, np.uint8))
    with pytest.raises(calibset.CalibrationSetError) as e:
        calibset.load(d, size=32)
    assert e.value.code == code and str(e.value)


def test_a_few_constant_frames_are_skipped(golden_dir: Path, tmp_path: Path) -> None:
    _copy(golden_dir, tmp_path / "c", 40)
    _png(tmp_path / "c" / "lens-cap.png", np.zeros((32, 32, 3), np.uint8))
    s = calibset.load(tmp_path / "c", size=32)
    assert len(s) == 40 and [p.name for p in s.skipped_constant] == ["lens-cap.png"]

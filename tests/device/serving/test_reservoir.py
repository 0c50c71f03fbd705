from __future__ import annotations

import time
from pathlib import Path

import pytest

from device.serving.reservoir import Reservoir


def _drain(r: Reservoir, expect: int, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = r.files()
        if len(files) >= expect and r.idle():
            return files
        time.sleep(0.02)
    return r.files()


def test_keeps_at_most_capacity_and_counts_what_it_saw(tmp_path: Path) -> None:
    r = Reservoir(tmp_path / "res", capacity=10, max_mb=1, seed=0)
    for i in range(100):
        r.offer(b"\xff\xd8 image %03d \xff\xd9" % i)
        time.sleep(0.001)
    files = _drain(r, 10)
    r.close()
    assert len(files) == 10 and r.seen == 100
    assert all(f.suffix == ".jpg" for f in files)
    again = Reservoir(tmp_path / "res", capacity=10, max_mb=1, seed=0)
    assert again.seen == 100  # survives a restart, so the sample stays uniform
    again.close()


def test_the_sample_is_uniform_over_everything_served(tmp_path: Path) -> None:
    """Algorithm R: each of 1,000 images is kept with probability 100/1000 (checked over halves)."""
    r = Reservoir(tmp_path / "res", capacity=100, max_mb=10, seed=1)
    for i in range(1000):
        r.offer(b"%04d" % i)
    files = _drain(r, 100)
    r.close()
    kept = [int(f.read_bytes()) for f in files]
    assert len(kept) == 100
    early = sum(k < 500 for k in kept)
    assert 30 <= early <= 70  # a binomial(100, 0.5) lies here with probability > 0.9999


def test_images_over_the_per_slot_share_of_the_cap_are_skipped(tmp_path: Path) -> None:
    r = Reservoir(tmp_path / "res", capacity=4, max_mb=0.001)  # 262 bytes per image
    r.offer(b"x" * 1000)
    r.offer(b"y" * 100)
    files = _drain(r, 1)
    r.close()
    assert r.skipped_large == 1 and len(files) == 1 and files[0].read_bytes() == b"y" * 100


def test_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Reservoir(tmp_path, capacity=0)

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared import datasets, imaging, inputstats
from shared.inputstats import STATS


def _golden(golden_dir: Path, n: int = 40) -> np.ndarray:
    return datasets.decode_all(datasets.balanced_subset(datasets.list_samples(golden_dir), n), size=32)


def _stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """The mean of each statistic over ``images``."""
    s = inputstats.image_stats(images)
    return {name: s[:, i].mean() for i, name in enumerate(STATS)}


def test_each_statistic_sees_what_it_names(golden_dir: Path) -> None:
    cv2 = imaging.opencv()
    rng = np.random.default_rng(1)
    img = _golden(golden_dir)
    f = img.astype(np.float32)
    s = _stats(img)
    darker = _stats((f * 0.5).astype(np.uint8))
    bluer = _stats(np.clip(f * (0.9, 0.95, 1.2), 0, 255).astype(np.uint8))
    hazy = _stats((f * 0.6 + 200 * 0.4).astype(np.uint8))
    soft = _stats(np.stack([cv2.GaussianBlur(i, (0, 0), sigmaX=0.7) for i in img]))
    noisy = _stats(np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8))
    assert darker["red"] < s["red"] / 1.8 and darker["white"] < s["white"] and darker["contrast"] < s["contrast"]
    assert bluer["blue"] > s["blue"] and bluer["red"] < s["red"]
    assert hazy["black"] > s["black"] + 0.2 and hazy["contrast"] < 0.7 * s["contrast"]
    assert soft["fine_detail"] < s["fine_detail"] - 0.3
    assert noisy["fine_detail"] > s["fine_detail"] + 0.3 and noisy["noise_floor"] > 3 * s["noise_floor"]


def test_the_noise_floor_is_the_noise_sigma_on_flat_areas() -> None:
    rng = np.random.default_rng(2)
    flat = np.full((4, 64, 64, 3), 128.0)
    noisy = np.clip(flat + rng.normal(0, 8, flat.shape), 0, 255).astype(np.uint8)
    floor = inputstats.image_stats(np.concatenate([flat.astype(np.uint8), noisy]))[:, STATS.index("noise_floor")]
    assert np.all(floor[:4] == 0)
    assert np.allclose(floor[4:] * 255, 8 * np.sqrt(0.299**2 + 0.587**2 + 0.114**2), rtol=0.2)  # luma's sigma


def test_image_stats_refuses_what_it_cannot_measure() -> None:
    with pytest.raises(ValueError, match="at least 8x8"):
        inputstats.image_stats(np.zeros((2, 7, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        inputstats.image_stats(np.zeros((32, 32, 3), dtype=np.uint8))
    assert inputstats.image_stats(np.zeros((3, 8, 8, 3), dtype=np.uint8)).shape == (3, len(STATS))


def test_a_profile_keeps_the_figures_of_each_predicted_class() -> None:
    stats = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 20.0]], dtype=np.float32)
    p = inputstats.profile(stats, np.array([0, 0, 2]), 3, names=("a", "b"))
    assert p.class_counts == (2, 0, 1) and p.class_mean[0] == (2.0, 10.0) and p.class_mean[2] == (5.0, 20.0)
    assert p.class_std[0] == (1.0, 0.0)
    assert p.class_mean[1] == pytest.approx(p.mean) and p.mean == pytest.approx((3.0, 40 / 3))
    with pytest.raises(ValueError):
        inputstats.profile(stats, np.array([0, 1]), 3, names=("a", "b"))


def _two_classes(
    rng: np.random.Generator, n: int, shift: float = 0.0, only: int | None = None
) -> inputstats.InputProfile:
    """Images of class 0 (statistic around 0.2) and class 1 (around 0.8), spread 0.05 within a class."""
    pred = np.full(n, only) if only is not None else rng.integers(0, 2, n)
    stats = (0.2 + 0.6 * pred + shift + rng.normal(0, 0.05, n))[:, None].astype(np.float32)
    return inputstats.profile(stats, pred, 2, names=("x",))


def _hist(p: inputstats.InputProfile) -> tuple[float, ...]:
    return tuple(c / sum(p.class_counts) for c in p.class_counts)


def test_a_window_of_one_class_is_compared_with_that_class() -> None:
    rng = np.random.default_rng(3)
    ref = _two_classes(rng, 400)
    one = _two_classes(rng, 200, only=0)
    assert inputstats.shifts(ref, one, _hist(one)) == {"x": 0.0}  # 6 spreads from the overall mean, 0 from its class
    moved = _two_classes(rng, 200, shift=0.05, only=1)  # one spread
    assert 0.6 < inputstats.shifts(ref, moved, _hist(moved))["x"] < 1.0  # less the sampling tolerance


def test_shifts_skip_statistics_one_side_lacks_and_refuse_other_classes() -> None:
    rng = np.random.default_rng(4)
    ref = _two_classes(rng, 100)
    extra = inputstats.profile(np.zeros((4, 2), dtype=np.float32), np.array([0, 1, 0, 1]), 2, names=("x", "new"))
    assert set(inputstats.shifts(ref, extra, (0.5, 0.5))) == {"x"}
    with pytest.raises(ValueError, match="classes"):
        inputstats.shifts(ref, extra, (0.5, 0.25, 0.25))

"""The field estimator: degrade clean images with a known ``Degradation`` and read it back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from host.factory.field import estimate, estimate_stats
from host.factory.field.degrade import Degradation
from shared import datasets


@pytest.fixture(scope="module")
def halves(golden_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The golden images split in two: a clean "training" half and a half to degrade as the field."""
    images = datasets.load_labelled(golden_dir).images
    return images[::2], images[1::2]


def _field(images: np.ndarray, d: Degradation, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([d.apply(im, rng) for im in images])


def test_the_batch_simulation_is_degradation_apply(halves: tuple[np.ndarray, np.ndarray]) -> None:
    d = Degradation(cast=(0.9, 1.0, 1.1), gain=0.6, gamma=1.2, offset=3, haze=0.1, blur=0.5, noise=5, jpeg_quality=60)
    got = estimate.simulate(d, halves[0], np.random.default_rng(3))
    assert np.array_equal(got, _field(halves[0], d, seed=3))


@pytest.mark.parametrize(
    "truth",
    [
        Degradation(cast=(0.85, 1.0, 1.12), gain=0.45, gamma=1.15),  # night's tone
        Degradation(cast=(0.9, 1.0, 0.8), gain=1.35, gamma=0.9, offset=15),  # glare: burnt out, then cast
        Degradation(gain=0.65, offset=70),  # fog's haze is this curve
    ],
)
def test_the_tone_curve_comes_back_from_the_quantiles(
    halves: tuple[np.ndarray, np.ndarray], truth: Degradation
) -> None:
    clean, other = halves
    q_clean = estimate_stats.colour(clean)[2]
    q_field = estimate_stats.colour(_field(clean, truth))[2]
    got = estimate.fit_tone(q_clean, q_field)
    assert got.gain == pytest.approx(truth.gain, rel=0.05)
    assert got.gamma == pytest.approx(truth.gamma, abs=0.06)
    assert got.offset == pytest.approx(truth.offset, abs=5)
    assert got.cast[0] == pytest.approx(truth.cast[0], abs=0.03)
    assert got.cast[2] == pytest.approx(truth.cast[2], abs=0.03)
    # from other images of the same kind (as the field is), still close
    other_fit = estimate.fit_tone(estimate_stats.colour(other)[2], q_field)
    assert other_fit.gain == pytest.approx(truth.gain, rel=0.12)


def test_the_statistics_move_the_way_each_effect_does(halves: tuple[np.ndarray, np.ndarray]) -> None:
    clean = halves[0]
    names = estimate_stats.DETAIL_NAMES
    base = dict(zip(names, estimate_stats.detail(clean), strict=True))
    blurred = dict(zip(names, estimate_stats.detail(_field(clean, Degradation(blur=1.0))), strict=True))
    noisy = dict(zip(names, estimate_stats.detail(_field(clean, Degradation(noise=10))), strict=True))
    blocky = dict(zip(names, estimate_stats.detail(_field(clean, Degradation(jpeg_quality=30))), strict=True))
    assert blurred["grad1"] < 0.8 * base["grad1"] and blurred["grad4"] > 0.8 * base["grad4"]
    assert noisy["noise"] > 2 * base["noise"] and noisy["flat1"] > 1.5 * base["flat1"]
    assert blocky["blockiness"] > base["blockiness"] + 0.1
    assert blocky["ghost30"] < 0.6 * base["ghost30"]  # re-compressing at its own quality changes little


CASES = {
    "night": Degradation(cast=(0.85, 1.0, 1.12), gain=0.45, gamma=1.15, blur=0.5, noise=6.5, jpeg_quality=50),
    "defocus": Degradation(blur=0.7, jpeg_quality=50),
    "sensor-noise": Degradation(noise=12, jpeg_quality=80),
}


@pytest.mark.parametrize("name", list(CASES))
def test_known_degradations_are_estimated_back(halves: tuple[np.ndarray, np.ndarray], name: str) -> None:
    clean, other = halves
    truth = CASES[name]
    est = estimate.estimate(_field(other, truth), clean, clean_images=48)
    got = est.degradation
    assert got.gain == pytest.approx(truth.gain, rel=0.1)
    assert got.cast[0] / got.cast[2] == pytest.approx(truth.cast[0] / truth.cast[2], rel=0.06)
    assert got.blur == pytest.approx(truth.blur, abs=0.2)
    assert got.noise == pytest.approx(truth.noise, abs=2.5)
    assert got.jpeg_quality is not None and truth.jpeg_quality is not None
    assert abs(got.jpeg_quality - truth.jpeg_quality) <= 10
    assert est.distance < 0.1 and est.evaluations > 10
    record = est.to_dict()
    assert record["degradation"]["jpeg_quality"] == got.jpeg_quality
    assert set(record["field"]["detail"]) == set(estimate_stats.DETAIL_NAMES)


def test_a_clean_field_is_estimated_as_clean(halves: tuple[np.ndarray, np.ndarray]) -> None:
    clean, other = halves
    got = estimate.estimate(other, clean, clean_images=48).degradation
    assert got.gain == pytest.approx(1.0, rel=0.1)
    assert got.blur <= 0.3 and got.noise <= 3.0
    assert got.jpeg_quality is None or got.jpeg_quality >= 70
    assert replace(got, jpeg_quality=None).haze == 0.0

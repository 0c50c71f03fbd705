from __future__ import annotations

import numpy as np
import pytest

from shared import drift


def _stats(
    rng: np.random.Generator,
    n: int,
    brightness: float = 0.45,
    sure: float = 0.95,
    classes: int = 10,
    sharp: float = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    means = np.clip(rng.normal(brightness, 0.08, (n, 3)), 0, 1).astype(np.float32)
    details = np.clip(rng.normal(sharp, 0.02, n), 0, 1).astype(np.float32)
    conf = np.clip(rng.normal(sure, 0.05, n), 0, 1).astype(np.float32)
    pred = rng.integers(0, classes, n)
    return means, details, conf, pred


def _summary(rng: np.random.Generator, n: int, **kwargs: float) -> drift.Summary:
    means, details, conf, pred = _stats(rng, n, **kwargs)  # type: ignore[arg-type]
    return drift.summarize(means, details, conf, pred, 10)


def test_psi_is_zero_for_equal_and_grows_with_difference() -> None:
    a = (0.25, 0.25, 0.25, 0.25)
    assert drift.psi(a, a) == pytest.approx(0.0, abs=1e-9)
    small = drift.psi(a, (0.3, 0.2, 0.25, 0.25))
    large = drift.psi(a, (0.7, 0.1, 0.1, 0.1))
    assert 0 < small < large
    with pytest.raises(ValueError):
        drift.psi(a, (0.5, 0.5))


def test_a_sample_of_the_same_data_does_not_drift() -> None:
    rng = np.random.default_rng(0)
    ref = _summary(rng, 2000)
    window = _summary(rng, 500)
    s = drift.score(ref, window)
    assert s.score < drift.DEFAULT_THRESHOLD / 2 and s.n_images == 500
    assert s.score == s.input_drift and s.label_drift < drift.DEFAULT_THRESHOLD


@pytest.mark.parametrize(("what", "kwargs"), [("darker", {"brightness": 0.2}), ("noisier", {"sharp": 0.13})])
def test_a_reference_without_input_statistics_flags_channel_and_detail_shifts(
    what: str, kwargs: dict[str, float]
) -> None:
    """References made before input statistics (no ``inputs``) still score input drift, from the channel
    means and the detail against the whole reference."""
    rng = np.random.default_rng(1)
    ref = _summary(rng, 2000)
    window = _summary(rng, 500, **kwargs)
    s = drift.score(ref, window)
    assert ref.inputs is None and s.score >= drift.DEFAULT_THRESHOLD and s.score == s.input_drift, what
    assert set(s.input_shifts) == {"channel_means", "detail"}


@pytest.mark.parametrize(("what", "kwargs"), [("less sure", {"sure": 0.6}), ("one class", {"classes": 1})])
def test_what_the_model_answers_is_not_input_drift(what: str, kwargs: dict[str, float]) -> None:
    """The class mix (label shift) and the confidences are reported, and never flag: before the split a
    window of one class scored PSI(class) / 0.25, 23.8 on CIFAR-10's test set in folder order."""
    rng = np.random.default_rng(1)
    ref = _summary(rng, 2000)
    s = drift.score(ref, _summary(rng, 500, **kwargs))
    assert s.score < drift.DEFAULT_THRESHOLD, what
    if what == "one class":
        assert s.label_drift == pytest.approx(s.psi_class / drift.PSI_ALARM) and s.label_drift > 10
    else:
        assert s.psi_confidence > drift.PSI_ALARM


def test_channel_means_and_confidences() -> None:
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[1, ..., 0] = 255
    m = drift.channel_means(images)
    assert m.shape == (2, 3) and m[1, 0] == pytest.approx(1.0) and m[0].sum() == 0
    conf, pred = drift.confidences(np.array([[0.1, 0.9], [0.7, 0.3]], dtype=np.float32))
    assert list(pred) == [1, 0] and conf[0] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        drift.channel_means(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        drift.summarize(m[:0], conf[:0], conf[:0], pred[:0], n_classes=2)


def test_detail_sees_noise_and_blur() -> None:
    rng = np.random.default_rng(0)
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.float32), (16, 1))[None, ..., None].repeat(3, axis=3)
    noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255)
    d = drift.detail(np.concatenate([smooth, noisy]).astype(np.uint8))
    assert d[0] < 0.01 < d[1]

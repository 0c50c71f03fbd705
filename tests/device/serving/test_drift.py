"""The device's drift monitor on what it really serves: the zoo model, batches of golden images one class
at a time (a camera on one scene), then the same class at night."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from device.engine.reference import reference_with, softmax
from device.serving.batcher import Batch
from device.serving.drift import DriftMonitor
from device.serving.model import ServedModel
from host.factory.field.shift import shift_images
from shared import datasets, imaging


@pytest.fixture
def with_reference(served_model: ServedModel, golden_dir: Path) -> ServedModel:
    samples = datasets.list_samples(golden_dir)
    ref = reference_with(served_model.runtime, samples, served_model.classes, served_model.prep, "golden")
    return replace(served_model, reference=ref.summary())


def _batch(model: ServedModel, images: np.ndarray) -> Batch:
    probs = softmax(model.runtime.infer(imaging.normalize(images, model.prep)))
    return Batch(images, probs, [None] * len(images), model)


def _one_class(golden_dir: Path, name: str) -> np.ndarray:
    samples = [s for s in datasets.list_samples(golden_dir) if s.class_name == name]
    return datasets.decode_all(samples, size=32)


def test_a_stream_of_one_class_is_label_drift_not_a_field_shift(with_reference: ServedModel, golden_dir: Path) -> None:
    monitor = DriftMonitor(window=40, min_images=20)
    for name in ("ship", "frog"):  # two windows, each of one class
        monitor(_batch(with_reference, _one_class(golden_dir, name)))
        monitor(_batch(with_reference, _one_class(golden_dir, name)))
        s = monitor.stats()
        assert s is not None and s.n_images == 40
        assert not s.drifted and s.score == s.input_drift and s.input_drift < 0.5, (name, s)
        assert s.label_drift is not None and s.label_drift > 10 and s.input_shifts is not None
        assert set(s.input_shifts) == {"red", "green", "blue", "contrast", "black", "white", "fine_detail",
                                       "noise_floor"}  # fmt: skip
    night = shift_images(_one_class(golden_dir, "frog"), "night")
    monitor(_batch(with_reference, night))
    monitor(_batch(with_reference, shift_images(_one_class(golden_dir, "frog"), "night", seed=1)))
    s = monitor.stats()
    assert s is not None and s.drifted and s.score == s.input_drift and s.input_drift > 2


def test_without_a_reference_or_enough_images_there_is_no_score(served_model: ServedModel, golden_dir: Path) -> None:
    monitor = DriftMonitor(window=40, min_images=20)
    monitor(_batch(served_model, _one_class(golden_dir, "ship")))
    assert monitor.stats() is None  # no reference
    ref = reference_with(served_model.runtime, datasets.list_samples(golden_dir), served_model.classes,
                         served_model.prep)  # fmt: skip
    model = replace(served_model, reference=ref.summary())
    monitor(_batch(model, _one_class(golden_dir, "ship")[:10]))
    assert monitor.stats() is None  # a new reference empties the window: 10 < min_images

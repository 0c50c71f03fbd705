"""Drift on real footage: CIFAR-10 test images the reference never saw, served as the folder lists them (one
class at a time, as a camera watching one scene sees) and shuffled, clean and through every shift preset of
`edgeloop data shift`. Input drift flags the presets and never the clean images; label drift is what the
class order moves. The zoo model and its stamped reference (the golden images), the device's DriftMonitor.

The data: $EDGELOOP_CIFAR10 (an ImageFolder or ``archive.tar.gz::test``), else the project's
``../shared/data/cifar10-jpeg.tar.gz``; skipped without either. 100 images a class, after the 20 golden ones.
The full test split is measured by benchmarks/drift.py.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.engine.reference import softmax, summary_from_meta
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from device.serving.batcher import Batch
from device.serving.drift import DriftMonitor
from device.serving.model import ServedModel
from host.factory.field.presets import PRESET_NAMES
from host.factory.field.shift import shift_images
from shared import datasets, drift, imaging
from shared.modelmeta import read_meta
from tests.helpers import REPO

PER_CLASS = 100  # one window of one class each
WINDOW = 100  # the smallest window the device scores (DriftConfig.min_images' default)
HELD_OUT_FROM = 20  # the golden images, which the zoo's reference was measured on, are each class's first 20


def _cifar_spec() -> str | None:
    env = os.environ.get("EDGELOOP_CIFAR10")
    if env:
        return env
    archive = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    return f"{archive}::test" if archive.exists() else None


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """1,000 held-out test images in folder order (100 of each class, one class after another)."""
    spec = _cifar_spec()
    if spec is None:
        pytest.skip("no CIFAR-10 test split: set EDGELOOP_CIFAR10 (an ImageFolder or archive.tar.gz::test)")
    by_class: dict[str, list[datasets.Sample]] = {}
    for s in datasets.list_samples(spec):
        by_class.setdefault(s.class_name, []).append(s)
    chosen = [s for name in sorted(by_class) for s in by_class[name][HELD_OUT_FROM : HELD_OUT_FROM + PER_CLASS]]
    return datasets.decode_all(chosen, size=32)


@pytest.fixture(scope="module")
def model(zoo_onnx: Path) -> Iterator[ServedModel]:
    meta = read_meta(zoo_onnx)
    reference = summary_from_meta(meta)
    assert reference is not None and reference.inputs is not None, "re-stamp: edgeloop data reference ZOO.onnx"
    with OnnxRuntimeRuntime(OnnxRuntimeConfig()) as rt, tempfile.TemporaryDirectory() as tmp:
        rt.load(rt.build(zoo_onnx, "fp32", Path(tmp)))
        yield ServedModel(rt, meta.classes, meta.preprocessing, "resnet20@zoo", reference)


def _served(model: ServedModel, images: np.ndarray, shuffle: bool) -> list[tuple[float, float, bool]]:
    """(input drift, label drift, flagged) of each window of ``WINDOW`` images, served in order or shuffled."""
    if shuffle:
        images = images[np.random.default_rng(0).permutation(len(images))]
    monitor = DriftMonitor(window=WINDOW, min_images=WINDOW)
    out = []
    for start in range(0, len(images), WINDOW):
        batch = images[start : start + WINDOW]
        probs = softmax(model.runtime.infer(imaging.normalize(batch, model.prep)))
        monitor(Batch(batch, probs, [None] * len(batch), model))
        s = monitor.stats()
        assert s is not None and s.input_drift is not None and s.label_drift is not None
        out.append((s.input_drift, s.label_drift, s.drifted))
    return out


def test_clean_images_one_class_at_a_time_or_shuffled_are_not_a_field_shift(
    model: ServedModel, images: np.ndarray
) -> None:
    in_order = _served(model, images, shuffle=False)
    shuffled = _served(model, images, shuffle=True)
    assert not any(flag for *_, flag in in_order + shuffled), (in_order, shuffled)
    assert max(i for i, *_ in in_order + shuffled) < 0.6 * drift.DEFAULT_THRESHOLD
    assert min(label for _, label, _ in in_order) > 10  # what the one mixed score used to flag
    assert max(label for _, label, _ in shuffled) < 2


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_shift_preset_is_flagged_one_class_at_a_time_and_shuffled(
    model: ServedModel, images: np.ndarray, preset: str
) -> None:
    shifted = shift_images(images, preset, seed=0)  # the draws of `edgeloop data shift --preset P --seed 0`
    in_order = _served(model, shifted, shuffle=False)
    shuffled = _served(model, shifted, shuffle=True)
    assert all(flag for *_, flag in in_order + shuffled), (preset, in_order, shuffled)
    assert min(i for i, *_ in in_order + shuffled) >= 1.5 * drift.DEFAULT_THRESHOLD, (preset, in_order)

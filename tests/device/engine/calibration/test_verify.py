from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device.engine.calibration.verify import allowed_loss, compare, drop_refused, mcnemar_p, wilson_upper
from device.engine.runtimes.base import Runtime
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from shared import datasets
from shared.modelmeta import read_meta


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[list[Runtime]]:
    opened: list[Runtime] = []
    yield opened
    for rt in opened:
        rt.close()


def _load(path: Path, work: Path, opened: list[Runtime]) -> Runtime:
    rt = OnnxRuntimeRuntime(OnnxRuntimeConfig(threads=1))
    rt.load(rt.build(path, "fp32", work))
    opened.append(rt)
    return rt


def test_wilson_upper() -> None:
    assert wilson_upper(48, 50) > 0.97 > 48 / 50  # 96% of 50 may well be 97%: not evidence of failure
    assert wilson_upper(9_600, 10_000) < 0.97  # 96% of 10,000 is
    assert wilson_upper(0, 0) == 1.0


def test_the_drop_is_decided_on_image_counts_not_floats() -> None:
    # 2 of 200 images is 1.0 point: 100 * (0.9 - 0.89) is 1.0000000000000009 in floats, and refused a good
    # engine on an AVX-512 VNNI CPU
    assert 100 * (0.9 - 0.89) > 1.0
    assert allowed_loss(1.0, 200) == 2 and allowed_loss(0.3, 1000) == 3 and allowed_loss(1.0, 50) == 0
    assert not drop_refused(lost=2, gained=0, n=200, max_drop_points=1.0)


def test_a_real_loss_is_refused_and_a_few_borderline_images_are_not() -> None:
    assert drop_refused(lost=20, gained=2, n=200, max_drop_points=1.0)  # 9 points, p ~ 1e-4
    assert drop_refused(lost=5, gained=0, n=200, max_drop_points=1.0)  # p = 1/32
    assert not drop_refused(lost=3, gained=0, n=200, max_drop_points=1.0)  # p = 1/8: could be chance
    assert not drop_refused(lost=9, gained=6, n=200, max_drop_points=1.0)  # swaps borderline images
    assert drop_refused(lost=150, gained=100, n=10_000, max_drop_points=0.1)  # on thousands, small drops count


def test_mcnemar_p() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 0) == 1 / 32
    assert mcnemar_p(1, 1) == 0.75  # P(X >= 1), X ~ Bin(2, 1/2)
    assert mcnemar_p(0, 4) == 1.0


def test_an_engine_agrees_with_itself_and_an_untrained_one_does_not(
    zoo_onnx: Path, random_onnx: Path, golden_dir: Path, tmp_path: Path, loaded: list[Runtime]
) -> None:
    data = datasets.load_labelled(golden_dir)
    prep = read_meta(zoo_onnx).preprocessing
    good = _load(zoo_onnx, tmp_path / "a", loaded)
    same = compare(_load(zoo_onnx, tmp_path / "b", loaded), good, data.images, prep, data.labels)
    assert same.passed and same.agreement == 1.0 and same.drop_points == 0.0
    assert same.lost == same.gained == 0
    bad = compare(_load(random_onnx, tmp_path / "c", loaded), good, data.images, prep, data.labels)
    assert not bad.passed and bad.drop_points is not None and bad.drop_points > 50
    assert "agreement" in bad.reason and "drop" in bad.reason
    unlabelled = compare(_load(random_onnx, tmp_path / "d", loaded), good, data.images, prep)
    assert not unlabelled.passed and unlabelled.drop_points is None

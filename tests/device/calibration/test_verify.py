from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device.calibration.verify import compare, wilson_upper
from device.runtimes.base import Runtime
from device.runtimes.onnxruntime import OnnxRuntimeConfig, OnnxRuntimeRuntime
from shared import datasets
from shared.modelmeta import read_meta


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[list[Runtime]]:
    opened: list[Runtime] = []
    yield opened
    for rt in opened:
        rt.close()


def _load(path: Path, work: Path, opened: list[Runtime]) -> Runtime:
    rt = OnnxRuntimeRuntime(OnnxRuntimeConfig(intra_op_threads=1))
    rt.load(rt.build(path, "fp32", work))
    opened.append(rt)
    return rt


def test_wilson_upper() -> None:
    assert wilson_upper(48, 50) > 0.97 > 48 / 50  # 96% of 50 may well be 97%: not evidence of failure
    assert wilson_upper(9_600, 10_000) < 0.97  # 96% of 10,000 is
    assert wilson_upper(0, 0) == 1.0


def test_an_engine_agrees_with_itself_and_an_untrained_one_does_not(
    zoo_onnx: Path, random_onnx: Path, golden_dir: Path, tmp_path: Path, loaded: list[Runtime]
) -> None:
    data = datasets.load_labelled(golden_dir)
    prep = read_meta(zoo_onnx).preprocessing
    good = _load(zoo_onnx, tmp_path / "a", loaded)
    same = compare(_load(zoo_onnx, tmp_path / "b", loaded), good, data.images, prep, data.labels)
    assert same.passed and same.agreement == 1.0 and same.drop_points == 0.0
    bad = compare(_load(random_onnx, tmp_path / "c", loaded), good, data.images, prep, data.labels)
    assert not bad.passed and bad.drop_points is not None and bad.drop_points > 50
    assert "agreement" in bad.reason and "drop" in bad.reason
    unlabelled = compare(_load(random_onnx, tmp_path / "d", loaded), good, data.images, prep)
    assert not unlabelled.passed and unlabelled.drop_points is None

from __future__ import annotations

import shutil
from pathlib import Path

from device.engine import reference
from device.engine.reference import summary_from_meta
from shared.modelmeta import read_meta


def test_reference_is_measured_and_stamped_without_touching_weights(zoo_onnx: Path, tmp_path: Path) -> None:
    import onnx

    copy = tmp_path / "m.onnx"
    shutil.copy(zoo_onnx, copy)
    ref = reference.reference_of(copy)
    assert ref.n_images == 200 and abs(sum(ref.class_hist) - 1) < 1e-6 and abs(sum(ref.confidence_hist) - 1) < 1e-6
    reference.stamp(copy, ref)
    assert summary_from_meta(read_meta(copy)) == ref.summary()
    before, after = onnx.load(str(zoo_onnx)), onnx.load(str(copy))
    assert [i.raw_data for i in before.graph.initializer] == [i.raw_data for i in after.graph.initializer]
    assert read_meta(copy).classes == read_meta(zoo_onnx).classes

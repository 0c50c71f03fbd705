"""``trials.plan``: what a device tries of a release, and the ship rule's ``runtimes`` on the device side."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.activation.records import ActivationError
from device.activation.trials import plan
from device.engine.runtimes.onnxruntime.runner import OnnxRuntimeRuntime
from device.engine.runtimes.openvino.runner import OpenVINORuntime
from shared.protocol import Artifact, Precision
from tests.shared.factories import manifest


def _artifact(precision: Precision, runtime: str = "any") -> Artifact:
    return Artifact.model_validate(
        {"name": f"m-{precision}-{runtime}.onnx", "url": "artifacts/m.onnx", "sha256": "b" * 64, "size": 10,
         "precision": precision, "runtime": runtime}
    )  # fmt: skip


ARTIFACTS = (_artifact("fp32"), _artifact("int8", "onnxruntime"))


def test_a_release_for_any_runtime_is_planned_on_every_runtime() -> None:
    with OnnxRuntimeRuntime() as ort, OpenVINORuntime() as ov:
        options = plan(manifest(artifacts=ARTIFACTS), [ort, ov], None, can_calibrate=False)
    assert {o.runtime for o in options} == {"onnxruntime", "openvino"}


def test_a_release_made_for_openvino_is_planned_on_openvino_alone() -> None:
    release = manifest(artifacts=ARTIFACTS, runtimes=("openvino",))
    with OnnxRuntimeRuntime() as ort, OpenVINORuntime() as ov:
        options = plan(release, [ort, ov], None, can_calibrate=False)
    assert options and {o.runtime for o in options} == {"openvino"}
    assert options[0].artifact.precision == "int8"  # OpenVINO runs ONNX Runtime's INT8 form


def test_a_device_without_the_releases_runtimes_refuses_it_and_says_why() -> None:
    release = manifest(artifacts=ARTIFACTS, runtimes=("openvino", "tensorrt"))
    with OnnxRuntimeRuntime() as ort, pytest.raises(ActivationError) as e:
        plan(release, [ort], None, can_calibrate=False)
    assert e.value.code == "no_suitable_artifact"
    assert "made for openvino, tensorrt" in str(e.value) and "this device runs onnxruntime" in str(e.value)


def test_ships_to_reads_a_dla_target_as_its_runtime() -> None:
    release = manifest(runtimes=("tensorrt",))
    assert release.ships_to("tensorrt:dla0") and release.ships_to("tensorrt")
    assert not release.ships_to("onnxruntime") and manifest().ships_to("onnxruntime")


def test_without_measuring_the_first_runtime_the_release_ships_to_is_the_one_tried(tmp_path: Path) -> None:
    """``[selection] measure = false`` tries one runtime, the highest-priority one: of those the release is made
    for (OpenVINO outranks ONNX Runtime, and a release for ONNX Runtime alone must still run)."""
    from device.activation import EngineManager
    from device.config import load_config
    from device.engine.builder import EngineCache
    from device.state import AgentState

    pytest.importorskip("openvino")
    cfg = load_config(
        None, device_id="dev", state_dir=str(tmp_path), require_signature=False, selection={"measure": False}
    )
    manager = EngineManager(cfg, AgentState(cfg.state_dir), EngineCache(tmp_path / "engines"))
    first = manager._runtimes_to_try(manifest())
    assert [rt.name for rt in first] == ["openvino"]
    only_ort = manager._runtimes_to_try(manifest(runtimes=("onnxruntime",)))
    assert [rt.name for rt in only_ort] == ["onnxruntime"]
    options = manager._plan(manifest(artifacts=ARTIFACTS, runtimes=("onnxruntime",)), None)
    assert {o.runtime for o in options} == {"onnxruntime"}
    for rt in (*first, *only_ort):
        rt.close()

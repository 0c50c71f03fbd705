"""The INT8 gate of an activation, with real ONNX Runtime engines and a real HTTP artifact server.

The failing INT8 file is made to fail on every CPU: it is calibrated on images at 5% brightness, so
its activation ranges are far too narrow and real images saturate them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from device.activation import EngineManager
from device.config import AgentConfig, load_config
from device.engine.builder import EngineCache
from device.engine.calibration import forms
from device.engine.calibration.quantize import quantize
from device.state import AgentState
from host.fleet.release import ReleaseStore, create_release
from shared import datasets
from shared.protocol import ReleaseManifest


def _manager(state_dir: Path, pub: Path, **kw: object) -> EngineManager:
    """ONNX Runtime with INT8 pinned: what the gate does, not what the selection would measure."""
    kw.setdefault("selection", {"precision": "int8"})
    cfg: AgentConfig = load_config(
        None, device_id="dev", state_dir=str(state_dir), trusted_keys=[str(pub)], runtime={"type": "onnxruntime"}, **kw
    )
    return EngineManager(cfg, AgentState(cfg.state_dir), EngineCache(cfg.state_dir / "engines"))


def _release(
    zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, keys: tuple[Path, Path], tmp: Path, good: bool
) -> ReleaseManifest:
    build = tmp / "build"
    build.mkdir()
    shutil.copy(zoo_onnx, build / "resnet20.onnx")
    images = datasets.load_labelled(golden_dir, limit=64).images
    if not good:
        images = (images * 0.05).astype(np.uint8)  # ranges calibrated on near-black images
    form = forms.choose("onnxruntime", False).form
    quantize(zoo_onnx, build / "resnet20-int8.onnx", images, form, "onnxruntime", "minmax")
    return create_release(build, "r20", "1.0.0", store, sign_key=keys[0], source_top1=0.9)


def test_an_int8_engine_that_agrees_goes_live(
    zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path, good=True)
    mgr = _manager(tmp_path / "state", keys[1])
    act = mgr.activate(m, served)
    mgr.close()
    assert act.slot.precision == "int8" and act.events == []
    assert [(c.precision, c.verified, c.chosen) for c in act.candidates] == [("int8", True, True)]


def test_a_failing_int8_engine_is_refused_for_fp32(
    zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path, good=False)
    mgr = _manager(tmp_path / "state", keys[1])
    act = mgr.activate(m, served)
    mgr.close()
    assert act.slot.precision == "fp32" and act.slot.artifact == "resnet20.onnx"
    assert [code for _, code, _ in act.events] == ["int8_verification_failed"]
    assert act.candidates[0].precision == "int8" and act.candidates[0].verified is False
    assert act.candidates[0].drop_points is not None and act.candidates[0].drop_points > 1.0
    assert [c.chosen for c in act.candidates] == [False, True] and act.candidates[1].precision == "fp32"


@pytest.mark.parametrize("where", ["field_dir"])
def test_with_field_images_the_device_requantizes_and_verifies(
    zoo_onnx: Path,
    golden_dir: Path,
    store: ReleaseStore,
    served: str,
    keys: tuple[Path, Path],
    tmp_path: Path,
    where: str,
) -> None:
    field = tmp_path / "field"
    field.mkdir()
    for f in sorted(golden_dir.rglob("*.jpg"))[::2]:
        shutil.copy(f, field / f"{f.parent.name}-{f.name}")
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path, good=False)
    mgr = _manager(tmp_path / "state", keys[1], field_dir=str(field))
    act = mgr.activate(m, served)
    assert act.slot.precision == "int8" and act.slot.artifact.startswith("device-int8-")
    assert [code for _, code, _ in act.events] == ["int8_verification_failed", "int8_requantized"]
    local = [c for c in act.candidates if c.origin == "device"]
    assert local and local[0].verified is True and local[0].chosen
    mgr.close()
    restarted = _manager(tmp_path / "state", keys[1], field_dir=str(field))  # the device-made engine survives a reboot
    restarted.restore()
    with restarted.active() as (rt, _, slot):
        assert slot.precision == "int8" and rt.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    restarted.close()


def test_the_gate_can_be_switched_off(
    zoo_onnx: Path, golden_dir: Path, store: ReleaseStore, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = _release(zoo_onnx, golden_dir, store, keys, tmp_path, good=False)
    mgr = _manager(tmp_path / "state", keys[1], int8={"verify": False})
    act = mgr.activate(m, served)
    mgr.close()
    assert act.slot.precision == "int8"
    assert [(c.precision, c.verified, c.chosen) for c in act.candidates] == [("int8", None, True)]  # unchecked

"""A rollout of a release made for some runtimes (the ship rule): the devices that run another one now are left
out and named, unless the rollout names them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from host.fleet.rollout import RolloutController
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from shared import protocol as p
from shared.errors import EdgeloopError
from tests.shared.factories import manifest


def _fleet(tmp_path: Path, runtimes: dict[str, str | None], db: str = "h") -> tuple[Store, RolloutController]:
    store = Store(str(tmp_path / f"{db}.sqlite"))
    for device, runtime in runtimes.items():
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online", runtime=runtime))
    return store, RolloutController(store, lambda _topic, _payload: True, "http://h/")


def _members(store: Store, rid: str) -> list[str]:
    r = store.rollout(rid)
    assert r is not None
    return sorted(d.device_id for d in r.devices)


def test_devices_on_another_runtime_are_left_out_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, controller = _fleet(tmp_path, {"dev-a": "openvino", "dev-b": "onnxruntime", "dev-c": None})
    with caplog.at_level(logging.WARNING, logger="host.fleet.rollout.controller"):
        rid = controller.create(manifest(runtimes=("openvino",)), "lab", RolloutConfig(waves=["100%"]))
    assert "is made for openvino: left out dev-b (onnxruntime)" in caplog.text
    assert _members(store, rid) == ["dev-a", "dev-c"]  # dev-c has not said what it runs: it decides itself


def test_a_release_for_any_runtime_or_named_devices_go_to_every_device(tmp_path: Path) -> None:
    store, controller = _fleet(tmp_path, {"dev-a": "openvino", "dev-b": "onnxruntime"})
    rid = controller.create(manifest(), "lab", RolloutConfig(waves=["100%"]))
    assert _members(store, rid) == ["dev-a", "dev-b"]
    store, controller = _fleet(tmp_path, {"dev-a": "openvino", "dev-b": "onnxruntime"}, db="h2")
    rid = controller.create(manifest(runtimes=("openvino",)), "lab", RolloutConfig(waves=["100%"], devices=["dev-b"]))
    assert _members(store, rid) == ["dev-b"]  # named: asked anyway (it may have OpenVINO installed)


def test_a_fleet_with_none_of_the_runtimes_is_a_clear_error(tmp_path: Path) -> None:
    store, controller = _fleet(tmp_path, {"dev-a": "onnxruntime", "dev-b": "tensorrt:dla0"})
    with pytest.raises(EdgeloopError, match="made for openvino, and every device of the fleet runs another"):
        controller.create(manifest(runtimes=("openvino",)), "lab", RolloutConfig(waves=["100%"]))
    assert store.rollouts() == []

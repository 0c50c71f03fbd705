"""A rollout of a release made for some runtimes (the ship rule): the devices that run another one are named."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from host.fleet.rollout import RolloutController
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from shared import protocol as p
from tests.shared.factories import manifest


def test_devices_on_another_runtime_are_named_and_still_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(str(tmp_path / "h.sqlite"))
    for device, runtime in (("dev-a", "openvino"), ("dev-b", "onnxruntime"), ("dev-c", None)):
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online", runtime=runtime))
    controller = RolloutController(store, lambda _topic, _payload: True, "http://h/")
    with caplog.at_level(logging.WARNING, logger="host.fleet.rollout.controller"):
        rid = controller.create(manifest(runtimes=("openvino",)), "lab", RolloutConfig(waves=["100%"]))
    assert "is made for openvino; dev-b run another runtime" in caplog.text
    r = store.rollout(rid)
    assert r is not None and sorted(d.device_id for d in r.devices) == ["dev-a", "dev-b", "dev-c"]

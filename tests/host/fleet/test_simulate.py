"""The fleet simulator drives the real host: an injected accuracy drop is caught by the gate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from host.fleet.rollout_config import RolloutConfig
from host.fleet.server import HostServer, ServeConfig
from host.fleet.simulate import DeviceModel, SimDevice, SimFleet
from shared.mqtt import BrokerSettings
from tests.fixtures import MakeRelease
from tests.helpers import free_port

pytestmark = pytest.mark.e2e


def _until(cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError


@pytest.mark.parametrize(("drop", "expected"), [(0.0, "completed"), (3.0, "rolled_back")])
def test_simulated_fleet_rollout(drop: float, expected: str, make_release: MakeRelease, zoo_onnx: Path,
                                 store: object, tmp_path: Path) -> None:  # fmt: skip
    v1 = make_release(zoo_onnx, "1.0.0", source_top1=0.9)
    v2 = make_release(zoo_onnx, "2.0.0", source_top1=0.9)
    srv = HostServer(ServeConfig(releases=store.root, store_url=str(tmp_path / "h.sqlite"), port=free_port(),  # type: ignore[attr-defined]
                                 embedded_broker=True, embedded_broker_port=free_port(), tick_s=0.2))  # fmt: skip
    srv.start()
    fleet = SimFleet(8, BrokerSettings(port=srv.config.embedded_broker_port, protocol="3.1.1"), "sim",
                     DeviceModel(accuracy_drop_points=0.0, accuracy_noise_points=0.0))  # fmt: skip
    try:
        fleet.start()
        _until(lambda: len(srv.store.devices("sim")) == 8)
        rid = srv.controller.create(v1, "sim", RolloutConfig(waves=["100%"]))
        _until(lambda: (r := srv.store.rollout(rid)) is not None and r.state == "completed")
        for d in fleet.devices:
            d.model.accuracy_drop_points = drop
        rid = srv.controller.create(v2, "sim", RolloutConfig(waves=["1", "25%", "100%"], max_accuracy_drop=1.0))
        _until(lambda: (r := srv.store.rollout(rid)) is not None and r.state in ("completed", "rolled_back"))
        r = srv.store.rollout(rid)
        assert r is not None
        assert r.state == expected, r.reason
        want = "2.0.0" if expected == "completed" else "1.0.0"
        _until(lambda: {d.release_version for d in srv.store.devices("sim")} == {want})
        if expected == "rolled_back":
            assert [len([d for d in r.devices if d.state != "pending"])] == [1]  # only the canary was touched
    finally:
        fleet.stop()
        srv.stop()


def test_a_simulated_device_refuses_a_release_made_for_another_runtime() -> None:
    """Simulated devices run TensorRT: like a real agent, they refuse a release the ship rule made for others."""
    from shared import protocol as p
    from tests.shared.factories import manifest

    device = SimDevice("sim-1", "sim", BrokerSettings(port=1), DeviceModel(deploy_failure_rate=0.0), seed=0)
    sent: list[p.AnyReport] = []
    device._report = sent.append  # type: ignore[method-assign,assignment]
    device.publish_status = lambda *a, **k: None  # type: ignore[method-assign]
    releases = ((manifest("1.0.0", runtimes=("openvino",)), False), (manifest("1.1.0", runtimes=("tensorrt",)), True))
    for release, ok in releases:
        cmd = p.DeployCommand(device_id="sim-1", manifest=release, base_url="http://h/")
        device._activate(release, cmd, "deploy")
        deploy = next(r for r in sent if isinstance(r, p.DeployReport) and r.release == release.ref)
        assert deploy.ok is ok
    assert "no_suitable_artifact: release r20@1.0.0 is made for openvino" in (sent[0].error or "")  # type: ignore[union-attr]
    assert device.release is not None and device.release.version == "1.1.0"

"""The rollout gates read only the report of the device a command went to (issue 15).

A second device, in the same fleet or another, publishes ``ok: true`` and ``top1: 0.99`` with the
canary's command id before the canary's own failed report arrives: the canary's wave still fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from host.fleet.rollout import RolloutController
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from shared import protocol as p
from tests.shared.factories import manifest

pytestmark = pytest.mark.security


def _status(device: str, fleet: str = "lab") -> p.DeviceStatus:
    return p.DeviceStatus(device_id=device, fleet=fleet, state="online")


def _bench(device: str, cid: uuid.UUID, ref: p.ReleaseRef) -> p.BenchmarkReport:
    lat = p.LatencyStats(p50=1.0, p90=1.0, p99=1.0, max=1.0, mean=1.0)
    return p.BenchmarkReport(
        device_id=device,
        command_id=cid,
        rollout_id=None,
        release=ref,
        runtime="onnxruntime",
        precision="fp32",
        batch=1,
        iterations=10,
        latency_ms=lat,
        raw_throughput_ips=1000.0,
        top1=0.99,
    )


def test_another_devices_forged_reports_do_not_pass_the_canary(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "h.sqlite"))
    sent: list[tuple[str, bytes]] = []

    def publish(topic: str, payload: bytes) -> bool:
        sent.append((topic, payload))
        return True

    controller = RolloutController(store, publish, "http://h/")
    for device, fleet in (("dev-a", "lab"), ("dev-b", "lab"), ("dev-c", "other")):
        store.upsert_status(_status(device, fleet))
    m = manifest()
    rid = controller.create(m, "lab", RolloutConfig(waves=["1", "100%"], max_accuracy_drop=1.0))
    controller.tick()
    ((_topic, payload),) = sent
    canary = p.decode_command(payload)
    assert isinstance(canary, p.DeployCommand) and canary.device_id == "dev-a"
    cid = canary.message_id
    forged: list[tuple[str, p.AnyReport]] = [
        ("lab", p.DeployReport(device_id="dev-b", command_id=cid, rollout_id=rid, release=m.ref, ok=True)),
        ("lab", _bench("dev-b", cid, m.ref)),
        ("other", p.DeployReport(device_id="dev-c", command_id=cid, rollout_id=rid, release=m.ref, ok=True)),
        ("other", _bench("dev-c", cid, m.ref)),
    ]
    store.add_reports(forged)
    controller.tick()
    r = store.rollout(rid)
    assert r is not None and r.state == "running" and r.devices[0].state == "sent"  # still waiting for dev-a
    store.add_reports(
        [
            (
                "lab",
                p.DeployReport(
                    device_id="dev-a", command_id=cid, rollout_id=rid, release=m.ref, ok=False, error="self-test failed"
                ),
            )
        ]
    )
    controller.tick()
    r = store.rollout(rid)
    assert r is not None
    assert r.state in ("rolling_back", "rolled_back"), r.state
    wave = r.waves[0]
    assert wave.state == "failed" and wave.summary is not None and wave.summary.mean_top1 is None
    assert [(f.device_id, f.state, f.error) for f in wave.summary.failed] == [("dev-a", "failed", "self-test failed")]
    assert all(d.state == "pending" for d in r.devices if d.device_id != "dev-a")  # never sent
    store.close()

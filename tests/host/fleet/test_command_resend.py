"""A deploy the broker took but the device never answered is sent again, with backoff, while it is young
enough for the agent's clock-skew window; an answered one, or a failed one, is not (host/fleet/rollout/commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.fleet.rollout import RolloutController
from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from shared import protocol as p
from shared.errors import EdgeloopError
from tests.shared.factories import manifest


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _recording(store: Store) -> tuple[RolloutController, list[bytes]]:
    """A controller whose publisher records every payload and reports each one taken by the broker."""
    sent: list[bytes] = []

    def publish(topic: str, payload: bytes) -> bool:
        sent.append(payload)
        return True

    return RolloutController(store, publish, "http://h/"), sent


def _setup(
    tmp_path: Path, devices: tuple[str, ...], previous: p.ReleaseManifest | None = None
) -> tuple[Store, RolloutController, list[bytes], Clock, str]:
    """A rollout of r20@1.0.0 to ``devices`` (running ``previous`` if given), with a recording publisher."""
    store = Store(str(tmp_path / "h.sqlite"))
    controller, sent = _recording(store)
    clock = Clock()
    controller.sender.clock = clock
    if previous is not None:
        store.add_release(previous)
    for d in devices:
        ref = previous.ref if previous is not None else None
        store.upsert_status(p.DeviceStatus(device_id=d, fleet="lab", state="online", release=ref))
    rid = controller.create(manifest(), "lab", RolloutConfig(waves=["100%"], wave_timeout_s=3600))
    return store, controller, sent, clock, rid


def test_an_unanswered_deploy_is_sent_again_with_backoff_until_it_is_too_old(tmp_path: Path) -> None:
    store, controller, sent, clock, _ = _setup(tmp_path, ("dev-a",))
    controller.tick()
    assert len(sent) == 1
    times = []
    for _ in range(40):  # 400 s, a tick every 10 s
        clock.t += 10
        before = len(sent)
        controller.tick()
        if len(sent) > before:
            times.append(clock.t - 1000)
    assert times == [30, 90, 210]  # 30, then 60, then 120 s after the previous send; none past 300 s
    assert len(set(sent)) == 1  # the same payload (the same message id) each time
    assert controller.sender.resent == 3
    store.close()


def test_an_answered_or_failed_deploy_is_not_sent_again(tmp_path: Path) -> None:
    store, controller, sent, clock, rid = _setup(tmp_path, ("dev-a", "dev-b", "dev-c"))
    controller.tick()
    cmds = {c.device_id: c for c in map(p.decode_command, sent)}
    assert set(cmds) == {"dev-a", "dev-b", "dev-c"}
    ref = manifest().ref
    lat = p.LatencyStats(p50=1.0, p90=1.0, p99=1.0, max=1.0, mean=1.0)
    a, b = cmds["dev-a"].message_id, cmds["dev-b"].message_id
    store.add_reports([
        ("lab", p.DeployReport(device_id="dev-a", command_id=a, rollout_id=rid, release=ref, ok=False, error="x")),
        ("lab", p.DeployReport(device_id="dev-b", command_id=b, rollout_id=rid, release=ref, ok=True)),
        ("lab", p.BenchmarkReport(device_id="dev-b", command_id=b, rollout_id=rid, release=ref,
                                  runtime="onnxruntime", precision="fp32", batch=1, iterations=10, latency_ms=lat,
                                  raw_throughput_ips=1000.0, top1=0.99)),
    ])  # fmt: skip
    sent.clear()
    clock.t += 31
    controller.tick()
    assert [p.decode_command(x).device_id for x in sent] == ["dev-c"]  # the one that said nothing
    store.close()


def test_a_rollout_to_some_devices_of_the_fleet_sends_to_them_alone(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "h.sqlite"))
    controller, sent = _recording(store)
    for d in ("dev-a", "dev-b", "dev-c"):
        store.upsert_status(p.DeviceStatus(device_id=d, fleet="lab", state="online"))
    with pytest.raises(EdgeloopError, match="no device dev-x"):
        controller.create(manifest(), "lab", RolloutConfig(devices=["dev-c", "dev-x"]))
    rid = controller.create(manifest(), "lab", RolloutConfig(waves=["100%"], devices=["dev-c"]))
    controller.tick()
    r = store.rollout(rid)
    assert r is not None and [d.device_id for d in r.devices] == ["dev-c"]
    assert [p.decode_command(b).device_id for b in sent] == ["dev-c"]
    store.close()


def test_an_unanswered_rollback_is_sent_again_until_the_device_answers(tmp_path: Path) -> None:
    old = manifest("0.9.0")
    store, controller, sent, clock, rid = _setup(tmp_path, ("dev-a",), previous=old)
    controller.tick()
    sent.clear()
    controller.abort(rid)  # sent at once by the lease holder (this controller)
    controller.tick()
    (rollback,) = map(p.decode_command, sent)
    assert isinstance(rollback, p.RollbackCommand) and rollback.target == old.ref
    clock.t += 31
    controller.tick()
    assert len(sent) == 2 and sent[1] == sent[0]  # the same rollback, the same message id
    report = p.DeployReport(device_id="dev-a", command_id=rollback.message_id, rollout_id=rid, release=old.ref, ok=True)
    store.add_reports([("lab", report)])
    clock.t += 300
    controller.tick()
    r = store.rollout(rid)
    assert len(sent) == 2 and r is not None and r.devices[0].state == "rolled_back"
    store.close()

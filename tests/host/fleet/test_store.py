"""The store against SQLite and (where EDGELOOP_TEST_POSTGRES_URL is set, as in CI) a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from host.fleet.rollout_config import RolloutConfig
from host.fleet.store import Store
from host.fleet.store.records import RolloutMember
from host.fleet.store.schema import MIGRATIONS, schema_version
from shared import protocol as p
from tests.host.fleet.stores import BACKENDS, open_store
from tests.shared.factories import benchmark_report, manifest


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        yield s


def _bench(device: str = "d1", **kw: object) -> p.BenchmarkReport:
    return benchmark_report(device, **{"release": p.ReleaseRef(name="r20", version="1.0.0"), "top1": 0.9, **kw})


def test_schema_is_versioned_and_migrations_are_idempotent(store: Store) -> None:
    assert store.version() == len(MIGRATIONS) == 7
    assert store.migrate() == 7  # running again changes nothing
    assert store.version() == 7


def test_a_devices_warnings_are_kept_and_a_v4_store_gains_the_column(store: Store) -> None:
    warning = "tensorrt cannot run on this Jetson: the tensorrt backend needs TensorRT: apt install python3-libnvinfer"
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", warnings=(warning,)))
    (d,) = store.devices("lab")
    assert d.warnings == (warning,) and store.fleet("lab")[0].warnings == (warning,)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE devices DROP COLUMN warnings"))
        conn.execute(schema_version.delete().where(schema_version.c.version >= 5))  # v5 and every later step
    assert store.version() == 4 and store.migrate() == len(MIGRATIONS)
    (d,) = store.devices("lab")
    assert d.warnings == () and d.state == "online"  # the device is kept; its warnings come with its next status


def test_reports_are_idempotent_on_message_id(store: Store) -> None:
    a, b = _bench(), _bench("d2")
    ev = p.EventReport(device_id="d1", level="error", code="artifact_sha256_mismatch", message="x")
    assert store.add_reports([("lab", a), ("lab", b), ("lab", ev)]) == 3
    assert store.add_reports([("lab", a), ("lab", ev)]) == 0  # redelivered: nothing new
    assert store.count_reports() == 3 and store.count_reports("benchmark") == 2
    series = store.benchmark_series("lab")
    assert len(series) == 2 and series[0].p99_ms == 3.0
    assert store.events()[0].report.code == "artifact_sha256_mismatch"


def test_device_status_upsert_and_last_will(store: Store) -> None:
    ref = p.ReleaseRef(name="r20", version="1.0.0")
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", release=ref, runtime="onnxruntime"))
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="offline"))  # the Last Will
    (d,) = store.devices("lab")
    assert d.state == "offline" and d.release_name == "r20" and d.runtime == "onnxruntime"
    assert d.last_seen.tzinfo is not None


def test_rollout_state_round_trip(store: Store) -> None:
    m = manifest()
    store.add_release(m)
    store.add_release(m)  # idempotent
    assert store.release("r20", "1.0.0") == m
    rid = f"ro-{uuid.uuid4().hex[:8]}"
    members = [
        [RolloutMember(device_id="d1", previous_name=None, previous_version=None, was_online=True)],
        [RolloutMember(device_id="d2", previous_name="r20", previous_version="0.9", was_online=False)],
    ]
    store.create_rollout(rid, m, "lab", RolloutConfig(waves=["1", "100%"]), members)
    store.update_wave(rid, 0, state="sent")
    store.update_rollout_device(rid, "d1", state="sent", command_id="c1", command="{}", published=True)
    r = store.rollout(rid)
    assert r is not None and r.state == "running" and r.config == RolloutConfig(waves=["1", "100%"])
    assert [w.state for w in r.waves] == ["sent", "pending"]
    assert [(d.device_id, d.state, d.was_online) for d in r.devices] == [
        ("d1", "sent", True),
        ("d2", "pending", False),
    ]
    store.add_reports([("lab", _bench(rollout_id=rid, command_id=uuid.uuid4()))])
    assert len(store.rollout_reports(rid, p.BenchmarkReport)) == 1


def test_latest_benchmark_per_device(store: Store) -> None:
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    store.add_reports([("lab", _bench(sent_at=t0)), ("lab", _bench(sent_at=t0 + dt.timedelta(minutes=1), top1=0.5))])
    latest = store.latest_benchmarks("lab")
    assert latest[("lab", "d1")].top1 == 0.5


def test_jetson_power_and_telemetry_survive_the_store(store: Store) -> None:
    """A Jetson's BenchmarkReport (power figures) and status (EMC, power rails) come back as sent."""
    system = p.SystemInfo(
        gpu_load_percent=84.0, gpu_freq_mhz=713.0, emc_load_percent=18.0, emc_freq_mhz=3199.0,
        power_mw={"VDD_IN": 17946.0, "VDD_SOC": 3923.0}, power_total_mw=17946.0, temperatures_c={"tj": 65.562},
        nvpmodel="MAXN_SUPER", clocks_locked=False, sources=("psutil", "tegrastats", "nvpmodel"),
    )  # fmt: skip
    power = p.PowerStats(
        source="tegrastats", total_of="VDD_IN", samples=15, seconds=1.5, mean_mw=9000.0, peak_mw=11000.0,
        energy_mj=13500.0, energy_mj_per_image=1.2,
    )  # fmt: skip
    rid = f"ro-{uuid.uuid4().hex[:8]}"
    sent = _bench(rollout_id=rid, command_id=uuid.uuid4(), power=power, system=system)
    store.add_reports([("lab", sent)])
    assert [r.report for r in store.rollout_reports(rid, p.BenchmarkReport)] == [sent]
    store.upsert_status(p.DeviceStatus(device_id="d1", fleet="lab", state="online", system=system))
    (d,) = store.devices("lab")
    assert d.system == system

"""Served telemetry in the store (SQLite and, with EDGELOOP_TEST_POSTGRES_URL, PostgreSQL): the time
series, idempotent writes, running totals, the fleet view's served latency and drift, migrations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from host.fleet.store import Store
from host.fleet.store.schema import MIGRATIONS, schema_version
from shared import protocol as p
from tests.host.fleet.factories import drift_stats, telemetry_report
from tests.host.fleet.stores import BACKENDS, open_store
from tests.shared.factories import benchmark_report

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(request.param, tmp_path) as s:
        yield s


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_telemetry_is_a_time_series_written_once_per_message(store: Store) -> None:
    a = telemetry_report("d1", sent_at=_at(0))
    b = telemetry_report("d1", sent_at=_at(1), latency_ms=p.LatencyStats(p50=5, p90=7, p99=11, max=20, mean=5.5))
    c = telemetry_report("d2", sent_at=_at(0), drift=None, latency_ms=None, requests=0, errors={"too_large": 3})
    bench = benchmark_report("d1")
    assert store.add_reports([("lab", a), ("lab", b), ("lab", bench), ("other", c)]) == 4
    assert store.add_reports([("lab", a), ("lab", b), ("lab", a)]) == 0  # redelivered: nothing new
    assert store.count_telemetry() == 3 and store.count_telemetry("lab") == 2
    assert store.count_reports() == 1  # telemetry has its own table, the report log keeps the rest
    series = store.telemetry_series("lab")
    assert [(t.device_id, t.p99_ms) for t in series] == [("d1", 9.0), ("d1", 11.0)]  # oldest first
    assert series[0].sent_at == a.sent_at and series[0].received_at.tzinfo is not None
    assert series[0].drift == a.drift and series[0].errors == {"not_an_image": 2} and series[0].error_count == 2
    assert [t.device_id for t in store.telemetry_series(device="d2")] == ["d2"]
    assert [t.sent_at for t in store.telemetry_series("lab", limit=1)] == [b.sent_at]  # the latest `limit`
    (quiet,) = store.telemetry_series("other")
    assert quiet.p50_ms is None and quiet.drift is None and quiet.drift_score is None and quiet.error_count == 3


def test_running_totals_count_each_report_once(store: Store) -> None:
    reports = [telemetry_report("d1", sent_at=_at(i), requests=100 * (i + 1)) for i in range(3)]
    # one batch with a duplicate in it, then a redelivery of all of it
    assert store.add_reports([("lab", r) for r in [*reports, reports[0]]]) == 3
    assert store.add_reports([("lab", r) for r in reports]) == 0
    store.add_reports([("lab", telemetry_report("d1", errors={"truncated_image": 4, "not_an_image": 1}))])
    totals = store.served_totals("lab")[("lab", "d1")]
    assert totals["requests"] == 100 + 200 + 300 + 300
    assert totals["latency_ms_sum"] == pytest.approx(4.5 * 900)
    assert totals["error:not_an_image"] == 2 * 3 + 1 and totals["error:truncated_image"] == 4


def test_fleet_view_has_the_latest_served_latency_and_drift(store: Store) -> None:
    for device in ("d1", "d2", "d3"):
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online"))
    store.add_reports(
        [
            ("lab", telemetry_report("d1", sent_at=_at(0), drift=drift_stats(0.3))),
            ("lab", telemetry_report("d1", sent_at=_at(5), drift=drift_stats(3.1, n_images=400))),
            ("lab", telemetry_report("d2", sent_at=_at(5), drift=None)),
        ]
    )
    view = {d.device_id: d for d in store.fleet("lab")}
    d1 = view["d1"].drift
    assert d1 is not None and (d1.score, d1.drifted, d1.n_images, d1.at) == (3.1, True, 400, _at(5))
    assert view["d1"].served_p99_ms == 9.0 and view["d1"].served_release == "r20@1.0.0"
    assert view["d1"].served_at == _at(5) and view["d1"].served_throughput_ips == 10.0
    assert view["d2"].drift is None and view["d2"].served_p50_ms == 4.0  # served, but no drift score
    assert view["d3"].drift is None and view["d3"].served_p50_ms is None  # never served
    assert set(store.latest_telemetry("lab")) == {("lab", "d1"), ("lab", "d2")}


def test_input_and_label_drift_are_kept_apart_and_older_devices_still_show(store: Store) -> None:
    """A device serving one class at a time: high label drift, no input drift, not flagged. A device
    from before the split sends one mixed score: it shows as it came, without the two figures."""
    one_class = drift_stats(0.3, psi_class=5.95, label_drift=23.8)
    old = drift_stats(23.8, input_drift=None, label_drift=None, input_shifts=None)
    for device in ("d1", "d2"):
        store.upsert_status(p.DeviceStatus(device_id=device, fleet="lab", state="online"))
    store.add_reports([("lab", telemetry_report("d1", drift=one_class)), ("lab", telemetry_report("d2", drift=old))])
    view = {d.device_id: d.drift for d in store.fleet("lab")}
    new, before = view["d1"], view["d2"]
    assert new is not None and (new.score, new.input_drift, new.label_drift, new.drifted) == (0.3, 0.3, 23.8, False)
    assert before is not None and (before.score, before.input_drift, before.label_drift) == (23.8, None, None)
    (row,) = store.telemetry_series("lab", "d1")
    assert row.drift is not None and row.drift.input_shifts == {"fine_detail": 0.15} and row.drift_score == 0.3


@pytest.mark.security
def test_odd_but_valid_reports_do_not_fail_a_batch(store: Store) -> None:
    """Every value the wire model accepts fits its column (PostgreSQL refuses what does not fit)."""
    extreme = telemetry_report(
        "d" * 64,
        release=p.ReleaseRef(name="n" * 64, version="999999." * 3 + "999999"),  # the longest version the wire accepts
        runtime="r" * 64,
        window_s=86400,
        requests=10**12,
        errors={f"k{i:02d}" + "x" * 29: 10**12 for i in range(32)},
        throughput_ips=1e9,
        latency_ms=p.LatencyStats(p50=1e12, p90=1e12, p99=1e12, max=1e12, mean=1e12),
        mean_batch=1e6,
        mean_queue_depth=1e9,
        max_queue_depth=10**9,
        drift=drift_stats(1e6, threshold=1e6, n_images=10**7),
    )
    ordinary = telemetry_report("d1")
    assert store.add_reports([("f" * 64, extreme), ("lab", ordinary)]) == 2
    (row,) = store.telemetry_series(device="d" * 64)
    assert row.requests == 10**12 and row.error_count == 32 * 10**12 and row.release_version == "999999." * 3 + "999999"
    assert row.drift is not None and row.drift.n_images == 10**7


def test_a_v2_store_upgrades_in_place(store: Store) -> None:
    """A store made by an edgeloop before served telemetry gets the new tables, and keeps its data."""
    store.add_reports([("lab", benchmark_report("d1"))])
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE telemetry"))
        conn.execute(sa.text("DROP TABLE served_counts"))
        conn.execute(schema_version.delete().where(schema_version.c.version >= 3))  # v3 and every later step
    assert store.version() == 2
    assert store.migrate() == len(MIGRATIONS)
    assert store.version() == len(MIGRATIONS) and store.count_reports("benchmark") == 1
    assert store.add_reports([("lab", telemetry_report("d1"))]) == 1 and store.count_telemetry() == 1
